"""The metrics collector renders the contract of docs/design.md and drops removed targets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.metrics import Metrics, public_url
from monitor.model import Failure, Outage, ProbeResult, State, Target

PHASES = {"resolve": 0.001, "connect": 0.002, "tls": 0.003, "processing": 0.004,
          "transfer": 0.005}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **kwargs: object) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    kwargs.setdefault("buckets", (0.1, 1.0))
    metrics = Metrics("here", registry, clock=clock or Clock(1000.0),
                      **kwargs)  # type: ignore[arg-type]
    metrics.set_targets([
        Target("rt", "https://user:secret@www.rt.com/path?token=x", labels=(("country", "ru"),)),
        Target("duma", "http://duma.gov.ru/"),
    ])
    return metrics, registry


def ok(target: str, duration: float = 0.5) -> ProbeResult:
    return ProbeResult(target, 1000.0, duration, True, status=200, phases=PHASES,
                       cert_expiry=2000.0)


def test_probe_results_become_samples() -> None:
    metrics, reg = make()
    metrics.observe(ok("rt", 0.05))
    metrics.observe(ProbeResult("rt", 1010.0, 2.0, False, Failure.TIMEOUT, "timed out",
                                phase="processing"))
    labels = {"target": "rt", "location": "here"}
    assert reg.get_sample_value("monitor_probe_success", labels) == 0
    assert reg.get_sample_value("monitor_probes_total", {**labels, "result": "ok"}) == 1
    assert reg.get_sample_value("monitor_probes_total", {**labels, "result": "timeout"}) == 1
    assert reg.get_sample_value("monitor_probes_total", {**labels, "result": "dns"}) == 0
    assert reg.get_sample_value("monitor_http_status_code", labels) == 0
    assert reg.get_sample_value("monitor_tls_cert_expiry_timestamp_seconds", labels) == 2000.0
    bucket = "monitor_probe_duration_seconds_bucket"
    les = ("0.1", "1.0", "+Inf")
    buckets = {le: reg.get_sample_value(bucket, {**labels, "le": le}) for le in les}
    assert buckets == {"0.1": 1, "1.0": 1, "+Inf": 2}
    assert reg.get_sample_value("monitor_probe_duration_seconds_sum", labels) == pytest.approx(2.05)
    # Not probed yet: no probe series, but the info series is there.
    duma = {"target": "duma", "location": "here"}
    assert reg.get_sample_value("monitor_probe_success", duma) is None
    assert reg.get_sample_value(
        "monitor_target_info",
        {**duma, "url": "http://duma.gov.ru/", "kind": "http", "country": ""}) == 1


def test_info_url_has_no_credentials_or_query() -> None:
    _, reg = make()
    text = generate_latest(reg).decode()
    assert "secret" not in text and "token" not in text
    assert 'url="https://www.rt.com/path"' in text
    assert public_url("http://[::1]:8080/x?y=1") == "http://[::1]:8080/x"


@pytest.mark.parametrize("url", [
    "http://duma.gov.ru/", "https://www.rt.com", "https://a.example:8443/p/a%20th;x",
    "tcp://127.0.0.1:25", "HTTP://Example.COM/x", "http://host:080/", "http://h:65535/x",
    "http://u:p@h/x", "https://h/x?token=1", "https://h/x#f", "http://[::1]/",
    "http://h_1.example/", "icmp://10.0.0.1",
])
def test_the_plain_url_shortcut_gives_what_parsing_gives(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    assert public_url(url) == f"{parts.scheme}://{netloc}{parts.path}"


def test_dns_urls_keep_their_record_type() -> None:
    assert public_url("dns:///example.org") == "dns:///example.org"
    assert public_url("dns://9.9.9.9/example.org?type=MX") == "dns://9.9.9.9/example.org?type=MX"
    assert public_url("dns://9.9.9.9/example.org?x=secret") == "dns://9.9.9.9/example.org"


def test_removed_target_loses_its_series() -> None:
    metrics, reg = make()
    metrics.observe(ok("rt"))
    metrics.observe(ok("duma"))
    metrics.set_targets([Target("duma", "http://duma.gov.ru/")])
    text = generate_latest(reg).decode()
    assert 'target="rt"' not in text
    assert 'target="duma"' in text


def test_state_and_downtime_follow_transitions() -> None:
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    assert reg.get_sample_value("monitor_target_up", labels) is None  # unknown: absent
    metrics.set_state("rt", State.UP, 900.0)
    assert reg.get_sample_value("monitor_target_up", labels) == 1
    clock.now = 1100.0
    metrics.set_state("rt", State.DOWN, 1070.0)  # confirmed at 1100, started at 1070
    metrics.outage_opened("rt")
    clock.now = 1130.0
    assert reg.get_sample_value("monitor_target_up", labels) == 0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.0
    metrics.set_state("rt", State.UP, 1130.0)
    clock.now = 5000.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.0
    assert reg.get_sample_value("monitor_outages_total", labels) == 1


def test_per_target_histogram_can_be_switched_off() -> None:
    metrics, reg = make(per_target_histogram=False)
    metrics.observe(ok("rt"))
    assert "monitor_probe_duration_seconds" not in generate_latest(reg).decode()


def test_promtool_finds_nothing_to_complain_about() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    metrics, reg = make()
    metrics.observe(ok("rt"))
    metrics.observe(ProbeResult("duma", 1000.0, 0.1, False, Failure.DNS, "no such name"))
    metrics.set_state("rt", State.UP, 900.0)
    metrics.set_uptime("rt", "1d", 0.999)
    metrics.lateness.observe(0.01)
    metrics.reload_success.set(1)
    out = subprocess.run([promtool, "check", "metrics"], input=generate_latest(reg),
                         capture_output=True, timeout=30, check=False)
    assert out.returncode == 0 and not out.stdout and not out.stderr, out


async def test_streamed_exposition_has_the_same_samples_as_generate_latest() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics, reg = make(per_target_histogram=True)
    metrics.observe(ok("rt"))
    metrics.observe(ProbeResult("duma", 1000.0, 0.1, False, Failure.DNS, "no such name"))
    metrics.set_state("rt", State.DOWN, 990.0)
    metrics.set_open_outage("rt", Outage(1, "rt", "here", 990.0, None, Failure.HTTP,
                                         'HTTP 503 "busy" \\ x', 2))
    metrics.outage_opened("rt")
    metrics.set_uptime("rt", "7d", 0.5)
    metrics.lateness.observe(0.2)
    streamed = b"".join([chunk async for chunk in metrics.exposition(chunk=1)])

    def samples(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for family in text_string_to_metric_families(text.decode())
                for s in family.samples}

    expected = samples(generate_latest(reg))
    assert samples(streamed) == expected
    assert ("monitor_target_up", (("location", "here"), ("target", "rt")), 0.0) in expected
    assert ("monitor_outage_info", (("cause", "http"), ("first_error", 'HTTP 503 "busy" \\ x'),
                                    ("location", "here"), ("target", "rt")), 1.0) in expected
    promtool = shutil.which("promtool")
    if promtool:
        out = await asyncio.to_thread(subprocess.run, [promtool, "check", "metrics"],
                                      input=streamed, capture_output=True, timeout=30,
                                      check=False)
        assert out.returncode == 0 and not out.stdout and not out.stderr, out


def outage(target: str, start: float, *, cause: Failure = Failure.TIMEOUT,
           message: str = "timed out", maintenance: bool = False) -> Outage:
    return Outage(1, target, "here", start, None, cause, message, 2, maintenance=maintenance)


def test_known_time_and_downtime_count_as_the_record_does() -> None:
    """Uptime = 1 - Δdowntime / Δknown: known from the first confirmation, not before."""
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    clock.now = 1010.0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 0  # still unknown
    metrics.set_state("rt", State.UP, 1004.0)  # confirmed at 1010 by a probe started at 1004
    assert reg.get_sample_value("monitor_target_state_since_timestamp_seconds", labels) == 1004
    clock.now = 1100.0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 96.0
    metrics.set_state("rt", State.DOWN, 1070.0)
    clock.now = 1130.0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 126.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.0


def test_a_resumed_state_counts_from_the_start_of_this_run_only() -> None:
    """Down since before a restart: the gap while the monitor was away is unknown."""
    clock = Clock(1000.0)
    metrics, reg = make(clock)  # this run started at 1000
    metrics.set_state("rt", State.DOWN, 400.0)
    metrics.set_open_outage("rt", outage("rt", 400.0))
    clock.now = 1030.0
    labels = {"target": "rt", "location": "here"}
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 30.0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 30.0
    # ... while the recorded start is the record's, from before the restart.
    assert reg.get_sample_value("monitor_outage_open_since_timestamp_seconds",
                                {**labels, "cause": "timeout"}) == 400.0


def test_open_outage_series_carry_the_recorded_start_cause_and_first_error() -> None:
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    metrics.set_state("rt", State.DOWN, 990.0)
    long_error = 'HTTP 503 "Service\nUnavailable"\x1b[31m ' + "x" * 300
    metrics.set_open_outage("rt", outage("rt", 990.0, cause=Failure.HTTP, message=long_error))
    assert reg.get_sample_value("monitor_outage_open_since_timestamp_seconds",
                                {**labels, "cause": "http"}) == 990.0
    (info,) = [s for f in reg.collect() if f.name == "monitor_outage_info" for s in f.samples]
    error = info.labels["first_error"]
    assert error.startswith('HTTP 503 "Service Unavailable" [31m x')
    assert len(error) == 120 and "\n" not in error and "\x1b" not in error
    assert info.labels["cause"] == "http" and info.value == 1
    # Closed: both series are gone, the counters stay.
    clock.now = 1100.0
    metrics.set_state("rt", State.UP, 1095.0)
    metrics.set_open_outage("rt", None)
    text = generate_latest(reg).decode()
    assert "monitor_outage_open_since" not in text and "monitor_outage_info" not in text


def test_an_outage_in_maintenance_counts_neither_as_up_nor_as_down() -> None:
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    metrics.set_state("rt", State.UP, 1000.0)
    clock.now = 1100.0
    metrics.set_state("rt", State.DOWN, 1090.0)
    metrics.set_open_outage("rt", outage("rt", 1090.0, maintenance=True))
    clock.now = 1500.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 100.0
    metrics.set_state("rt", State.UP, 1500.0)
    metrics.set_open_outage("rt", None)
    clock.now = 1600.0
    assert reg.get_sample_value("monitor_known_seconds_total", labels) == 200.0


def test_the_notification_queue_is_read_at_scrape_time() -> None:
    pending = [3]
    _, reg = make(notification_queue=lambda: pending[0])
    assert reg.get_sample_value("monitor_notification_queue", {"location": "here"}) == 3
    pending[0] = 0
    assert reg.get_sample_value("monitor_notification_queue", {"location": "here"}) == 0


def test_default_duration_buckets_resolve_fast_sites() -> None:
    """Like the Prometheus clients' defaults: a 2 ms answer is not reported as 25 ms."""
    from monitor.config import MetricsConfig

    assert MetricsConfig().duration_buckets[0] <= 0.005
    metrics, reg = make(buckets=MetricsConfig().duration_buckets)
    metrics.observe(ok("rt", 0.002))
    labels = {"target": "rt", "location": "here"}
    assert reg.get_sample_value("monitor_probe_duration_seconds_bucket",
                                {**labels, "le": "0.005"}) == 1
    assert MetricsConfig().duration_buckets[-1] >= 30  # the longest timeouts still fit


def test_downtime_ends_at_the_first_successful_probe_of_the_recovery() -> None:
    """With up_after > 1 the recovery is confirmed later; the record ends the outage at the
    first success, and so does the counter, without ever going back."""
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    metrics.set_state("rt", State.DOWN, 1000.0)
    clock.now = 1060.0
    metrics.observe(ProbeResult("rt", 1060.0, 0.1, True, status=200))  # recovery run starts
    clock.now = 1090.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.0
    metrics.observe(ProbeResult("rt", 1090.0, 0.1, True, status=200))
    metrics.set_state("rt", State.UP, 1060.0)  # confirmed by the second success
    clock.now = 1200.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.0


def test_a_success_between_failures_does_not_stop_the_downtime() -> None:
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    metrics.set_state("rt", State.DOWN, 1000.0)
    metrics.observe(ProbeResult("rt", 1060.0, 0.1, True, status=200))
    metrics.observe(ProbeResult("rt", 1120.0, 2.0, False, Failure.TIMEOUT, "timed out"))
    clock.now = 1150.0
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 150.0


def test_the_downtime_counter_never_goes_back_for_a_success_it_has_outrun() -> None:
    """A scrape during the recovering probe has shown downtime past its start."""
    clock = Clock(1000.0)
    metrics, reg = make(clock)
    labels = {"target": "rt", "location": "here"}
    metrics.set_state("rt", State.DOWN, 1000.0)
    clock.now = 1060.5  # scraped while the probe started at 1060 runs
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.5
    metrics.observe(ProbeResult("rt", 1060.0, 0.8, True, status=200))
    clock.now = 1061.0
    metrics.set_state("rt", State.UP, 1060.0)
    assert reg.get_sample_value("monitor_downtime_seconds_total", labels) == 60.5


async def test_a_result_of_the_monitors_own_fault_is_counted_and_nothing_else() -> None:
    """Class `local` (offline, out of descriptors): unknown, never the target's failure."""
    metrics, reg = make()
    labels = {"target": "rt", "location": "here"}
    metrics.observe(ProbeResult("rt", 1000.0, 0.001, False, Failure.LOCAL, "network down"))
    assert reg.get_sample_value("monitor_probes_total", {**labels, "result": "local"}) == 1
    assert reg.get_sample_value("monitor_probe_success", labels) is None
    assert reg.get_sample_value("monitor_probe_duration_seconds_count", labels) is None
    streamed = b"".join([chunk async for chunk in metrics.exposition()]).decode()
    assert 'monitor_probes_total{target="rt",location="here",result="local"} 1.0' in streamed
    assert "monitor_probe_success{" not in streamed
    metrics.observe(ok("rt", 0.05))
    metrics.observe(ProbeResult("rt", 1010.0, 0.001, False, Failure.LOCAL, "network down"))
    assert reg.get_sample_value("monitor_probe_success", labels) == 1  # the last real answer
    assert reg.get_sample_value("monitor_http_status_code", labels) == 200
    assert reg.get_sample_value("monitor_probe_duration_seconds_count", labels) == 1
    assert reg.get_sample_value("monitor_probes_total", {**labels, "result": "local"}) == 2


async def test_both_renderings_are_the_same_text_and_describe_names_every_family() -> None:
    """One family table feeds collect() and exposition(): the same families in the same
    order, with the same HELP, TYPE and samples in order (generate_latest sorts labels, the
    streamed text keeps target and location first); describe() names the table's
    families, so a second Metrics for the same location on one registry is refused."""
    metrics, reg = make(per_target_histogram=True, store_errors=lambda: {"locked": 3})
    metrics.observe(ok("rt"))
    metrics.observe(ProbeResult("duma", 1000.0, 0.1, False, Failure.TLS, "bad cert",
                                cert_expiry=2e9))
    metrics.set_state("rt", State.DOWN, 990.0)
    metrics.set_state("duma", State.UP, 995.0)
    metrics.set_open_outage("rt", Outage(1, "rt", "here", 990.0, None, Failure.HTTP, "503", 2))
    metrics.outage_opened("rt")
    metrics.set_uptime("rt", "7d", 0.5)
    streamed = b"".join([chunk async for chunk in metrics.exposition(chunk=1)])
    from prometheus_client.parser import text_string_to_metric_families

    def families(text: bytes) -> list[tuple[str, str, str, list[tuple[str, object, float]]]]:
        return [(f.name, f.type, f.documentation,
                 [(s.name, sorted(s.labels.items()), s.value) for s in f.samples])
                for f in text_string_to_metric_families(text.decode())]

    assert families(streamed) == families(generate_latest(reg))

    described = {m.name for m in metrics.describe()}
    collected = {m.name for m in metrics.collect()}
    assert collected == described  # every family has a sample here
    assert {"monitor_store_errors", "monitor_probe_duration_seconds", "monitor_outage_info",
            "monitor_scheduler_lateness_seconds"} <= described
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics("here", reg)


async def test_reused_chunks_never_show_a_stale_value() -> None:
    """A scrape reuses the text of static families for chunks of targets nothing touched;
    after every kind of update, each rendering still equals a fresh one from collect()."""
    from prometheus_client.parser import text_string_to_metric_families

    clock = Clock(1000.0)
    metrics = Metrics("here", CollectorRegistry(), clock=clock, buckets=(0.1, 1.0))
    names = [f"t{i}" for i in range(2100)]  # three chunks of the exposition
    metrics.set_targets([Target(n, f"https://{n}.example/") for n in names])
    for n in names:
        metrics.observe(ok(n))
        metrics.set_state(n, State.UP, 990.0)

    async def scrape() -> list[bytes]:
        return [chunk async for chunk in metrics.exposition()]

    def families(text: bytes) -> list[tuple[str, list[tuple[str, object, float]]]]:
        return [(f.name, [(s.name, sorted(s.labels.items()), s.value) for s in f.samples])
                for f in text_string_to_metric_families(text.decode())]

    first, again = await scrape(), await scrape()
    reused = {id(c) for c in first} & {id(c) for c in again}
    # 7 static families have samples here (no outage, no uptime yet), in 3 chunks; a
    # family's first chunk is sent behind its header, so 2 chunks each come as they were.
    assert len(reused) == 7 * 2

    def fail(n: str) -> ProbeResult:
        return ProbeResult(n, 1001.0, 0.1, False, Failure.HTTP, "503", status=503)

    updates = [
        lambda: metrics.observe(fail("t5")),
        lambda: metrics.observe(ok("t5")),
        lambda: metrics.observe(ProbeResult("t1500", 1002.0, 0.1, True, cert_expiry=3e9)),
        lambda: metrics.set_state("t2099", State.DOWN, 1003.0),
        lambda: metrics.set_open_outage("t2099", Outage(
            7, "t2099", "here", 1003.0, None, Failure.TIMEOUT, "timed out", 3)),
        lambda: metrics.outage_opened("t2099"),
        lambda: metrics.set_uptime("t1000", "7d", 0.25),
        lambda: metrics.set_uptime("t1000", "7d", None),
        lambda: metrics.set_open_outage("t2099", None),
        lambda: metrics.set_state("t2099", State.UP, 1010.0),
        lambda: metrics.pause(1020.0),
        lambda: metrics.resume(1030.0),
        lambda: metrics.set_targets([Target(n, f"https://{n}.example/", labels=(("team", "a"),))
                                     for n in names[1:]]),
    ]
    for update in updates:
        clock.now += 5
        update()
        streamed = b"".join(await scrape())
        assert families(streamed) == families(generate_latest(metrics)), update


async def test_probed_targets_lines_are_rendered_before_the_scrape_asks() -> None:
    """The daemon renders the per-probe lines of probed targets every few seconds
    (render_probed), so a scrape finds them ready; they equal a fresh rendering."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics, reg = make(per_target_histogram=True)
    metrics.observe(ok("rt"))
    metrics.observe(ProbeResult("duma", 1000.0, 0.1, False, Failure.DNS, "no such name"))
    await metrics.render_probed()
    assert metrics._stale == set()  # every probed target's lines are ready
    streamed = b"".join([chunk async for chunk in metrics.exposition()])

    def families(text: bytes) -> list[tuple[str, list[tuple[str, object, float]]]]:
        return [(f.name, [(s.name, sorted(s.labels.items()), s.value) for s in f.samples])
                for f in text_string_to_metric_families(text.decode())]

    assert families(streamed) == families(generate_latest(reg))
    metrics.observe(ok("rt"))  # probed again: stale until the next rendering
    assert len(metrics._stale) == 1

"""Structure of the shipped Grafana dashboards, their provisioning and compose.yaml.

Offline: no Grafana or Docker here. The dashboards' queries are parsed with promtool;
an integration test runs them against a real Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import promql
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import Metrics
from monitor.model import PHASES, Failure, Outage, ProbeResult, State, Target

UIDS = {"monitor-overview", "monitor-target", "monitor-vantage"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# The monitor's own record (GET /api/v1/outages) through Grafana's Infinity data source,
# provisioned with this uid (provisioning/datasources/prometheus.yml).
RECORD_REF = {"type": "yesoreyeram-infinity-datasource", "uid": "monitor-record"}
PANEL_TYPES = {"row", "stat", "state-timeline", "timeseries", "bargauge", "table"}
PROVISIONING = promql.ROOT / "dashboards" / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def dashboards() -> list[dict[str, Any]]:
    return promql.load_dashboards()


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def datasource_refs(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every value under a "datasource" key anywhere in the JSON, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}/{key}", value))
            found.extend(datasource_refs(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(datasource_refs(value, f"{path}/{i}"))
    return found


def test_the_three_dashboards_are_shipped_with_stable_uids(
    dashboards: list[dict[str, Any]],
) -> None:
    uids = [d["uid"] for d in dashboards]
    assert sorted(uids) == sorted(UIDS)
    titles = [d["title"] for d in dashboards]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", promql.dashboard_paths(), ids=lambda p: p.name)
def test_dashboard_is_valid_json_in_the_current_schema(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    assert re.fullmatch(r"monitor-[a-z]+", dashboard["uid"])
    assert dashboard["id"] is None  # provisioned: Grafana assigns its own database id
    assert "monitor" in dashboard["tags"]  # the dashboards link to each other by this tag
    assert dashboard["panels"]


def test_panel_ids_are_unique_including_rows(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        ids = [panel["id"] for panel in promql.iter_panels(dashboard)]
        assert all(isinstance(i, int) for i in ids), dashboard["uid"]
        assert len(ids) == len(set(ids)), f"{dashboard['uid']}: duplicate panel ids {ids}"


def test_iter_panels_finds_panels_inside_collapsed_rows() -> None:
    dashboard = {"panels": [{"id": 1, "type": "row", "panels": [{"id": 2}, {"id": 1}]}]}
    assert [p["id"] for p in promql.iter_panels(dashboard)] == [1, 2, 1]


def test_panels_are_well_formed(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        for panel in promql.iter_panels(dashboard):
            where = f"{dashboard['uid']}: {panel.get('title')!r}"
            assert panel["type"] in PANEL_TYPES, where
            assert panel["title"], where
            assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), where
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel["targets"], where
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for target in panel["targets"]:
                if target["datasource"] == RECORD_REF:
                    assert target["url"].startswith("/api/v1/") and target["root_selector"], where
                else:
                    assert target["expr"].strip(), where


def test_no_hard_coded_datasource(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        refs = datasource_refs(dashboard)
        assert refs
        for where, ref in refs:
            assert ref in (DATASOURCE_REF, RECORD_REF), f"{dashboard['uid']}{where}: {ref!r}"
        # Every panel and every query names its data source (no inherited default).
        for panel in promql.iter_panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"] in (DATASOURCE_REF, RECORD_REF)
                assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        for annotation in dashboard["annotations"]["list"]:
            assert annotation["datasource"] in (DATASOURCE_REF, RECORD_REF)


def test_datasource_location_and_target_variables(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        found = variables(dashboard)
        assert found["datasource"]["type"] == "datasource"
        assert found["datasource"]["query"] == "prometheus"
        for name in ("location", "target"):
            var = found[name]
            assert var["type"] == "query"
            assert var["multi"] is True and var["includeAll"] is True
            # Every series carries target and location, so ".+" is "all" and short.
            assert var["allValue"] == ".+"
            assert var["datasource"] == DATASOURCE_REF
            assert var["query"]["query"] == var["definition"]
            assert re.fullmatch(rf"label_values\((monitor_\w+)(\{{.*\}})?, {name}\)",
                                var["definition"])


def test_queries_filter_by_the_variables(dashboards: list[dict[str, Any]]) -> None:
    """Every query of a per-target series honours $target; raw series honour $location."""
    process_wide = re.compile(r"monitor_(scheduler|store|notification|config)_|"
                              r"monitor:scheduler_|up\{job=")
    for uid, title, expr in promql.raw_dashboard_queries():
        if promql.monitor_metrics(expr) or re.search(r"monitor:(target_up:blocked|sched)", expr):
            assert 'location=~"$location"' in expr, (uid, title, expr)
        if process_wide.search(expr):  # the monitor's own health: no target label
            assert "target" not in expr, (uid, title, expr)
        else:
            assert 'target=~"$target"' in expr, (uid, title, expr)


def test_every_metric_used_is_in_the_contract(dashboards: list[dict[str, Any]]) -> None:
    exprs = [expr for _, _, expr in promql.raw_dashboard_queries()]
    exprs += [rule["expr"] for rule in promql.rules()]
    exprs += [variables(d)[name]["definition"] for d in dashboards
              for name in ("location", "target")]
    used = set().union(*(promql.monitor_metrics(expr) for expr in exprs))
    assert used - promql.METRIC_CONTRACT == set()
    # What the dashboards show at all: state, causes, latency, phases, codes, TLS, uptime.
    assert {"monitor_target_up", "monitor_probes_total", "monitor_probe_duration_seconds_bucket",
            "monitor_probe_phase_seconds", "monitor_http_status_code",
            "monitor_tls_cert_expiry_timestamp_seconds", "monitor_uptime_ratio"} <= used
    recorded = set().union(*(promql.recorded_metrics(expr) for expr in exprs))
    assert recorded - promql.recorded_names() == set()


def test_metric_name_extraction() -> None:
    expr = ('count(monitor_target_up == 0) / monitor:target_up:locations'
            ' + on(x) monitor_probe_duration_seconds_bucket{job="monitor"}')
    assert promql.monitor_metrics(expr) == {"monitor_target_up",
                                            "monitor_probe_duration_seconds_bucket"}
    assert promql.recorded_metrics(expr) == {"monitor:target_up:locations"}


def test_the_daemon_exposes_every_metric_the_dashboards_and_rules_use() -> None:
    """The contract as monitor.metrics renders it, not just as docs/design.md states it."""
    registry = CollectorRegistry()
    metrics = Metrics("here", registry, store_errors=lambda: {"full": 1})
    metrics.set_targets([Target(name="site", url="https://site.example/")])
    metrics.observe(ProbeResult(target="site", started_at=0.0, duration=0.2, ok=True,
                                status=200, phases=dict.fromkeys(PHASES, 0.04),
                                cert_expiry=2e9))
    metrics.set_state("site", State.DOWN, 0.0)
    metrics.set_open_outage("site", Outage(1, "site", "here", 0.0, None, Failure.HTTP,
                                           "HTTP 503", 2))
    metrics.set_uptime("site", "1d", 1.0)
    metrics.missed_runs.labels("here", "missed").inc()
    metrics.lateness.observe(0.01)
    metrics.reload_success.set(1)
    metrics.notifications.labels("here", "mail", "failed").inc()
    exposed = {sample.name for family in
               text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples}
    used = set().union(*(promql.monitor_metrics(expr) for expr in
                         [e for _, _, e in promql.raw_dashboard_queries()]
                         + [rule["expr"] for rule in promql.rules()]))
    assert used - exposed == set()


def test_substitute() -> None:
    assert promql.substitute('x{a=~"$target", b=~"${location}"}[$__rate_interval]') == (
        'x{a=~".+", b=~".+"}[1m]')
    assert promql.substitute("y[${__range}] / $__interval_ms") == "y[1h] / 60000"
    assert promql.substitute('z{t=~"${target:regex}"}') == 'z{t=~".+"}'
    with pytest.raises(KeyError, match=r"\$nope"):
        promql.substitute('z{t="$nope"}')


def test_dashboard_queries_are_substituted_and_complete() -> None:
    queries = promql.dashboard_queries()
    assert {uid for uid, _, _ in queries} == UIDS
    assert all("$" not in expr for _, _, expr in queries)
    titles = {(uid, title) for uid, title, _ in queries}
    assert ("monitor-target", "annotation: Outages") in titles
    assert len(queries) == len(promql.raw_dashboard_queries())


def test_every_query_parses(tmp_path: Path) -> None:
    queries = promql.dashboard_queries()
    result = promql.check_expressions([(f"{uid} / {title}", expr) for uid, title, expr in queries],
                                      tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_parse_check_rejects_bad_promql(tmp_path: Path) -> None:
    result = promql.check_expressions([("ok", "up"), ("broken", "sum by (x) (rate(up[1m])")],
                                      tmp_path)
    assert result.returncode != 0
    assert "broken" in result.stdout + result.stderr


def test_outages_are_annotations_on_the_target_dashboard(dashboards: list[dict[str, Any]]) -> None:
    target = next(d for d in dashboards if d["uid"] == "monitor-target")
    confirmed, recorded = target["annotations"]["list"]
    assert confirmed["enable"] is True
    assert re.fullmatch(r'monitor_target_up\{.*\} == 0', confirmed["expr"])
    # The recorded periods: from the first failing probe, as the record has them.
    assert recorded["datasource"] == RECORD_REF and recorded["enable"] is True
    assert recorded["target"]["url"] == "/api/v1/outages"
    columns = {c["text"]: c for c in recorded["target"]["columns"]}
    assert recorded["mappings"]["time"]["value"] == "Start"
    assert columns["Start"]["selector"] == "started_at" and columns["Start"]["type"] == "timestamp"
    assert recorded["mappings"]["timeEnd"]["value"] == "End"
    assert columns["End"]["selector"] == "ended_at"


def record_queries(dashboards: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, Infinity query) of every panel and annotation reading the monitor's record."""
    found = []
    for dashboard in dashboards:
        for panel in promql.iter_panels(dashboard):
            found += [(f"{dashboard['uid']}: {panel['title']}", t)
                      for t in panel.get("targets", []) if t["datasource"] == RECORD_REF]
        found += [(f"{dashboard['uid']}: annotation {a['name']}", a["target"])
                  for a in dashboard["annotations"]["list"] if a["datasource"] == RECORD_REF]
    return found


def test_the_outage_log_and_every_uptime_figure_follow_the_record(
    dashboards: list[dict[str, Any]],
) -> None:
    overview = next(d for d in dashboards if d["uid"] == "monitor-overview")
    titles = [p["title"] for p in promql.iter_panels(overview)]
    assert "Outage log (the monitor's record)" in titles
    assert "Now, per target and location" in titles
    assert "The monitor's own health" in titles
    where = {w for w, _ in record_queries(dashboards)}
    assert "monitor-target: annotation Recorded outages" in where
    # No uptime from averaging the state gauge: it disagrees with the record.
    for uid, title, expr in promql.raw_dashboard_queries():
        assert "avg_over_time(monitor_target_up" not in expr, (uid, title)
        if "increase(monitor_downtime_seconds_total" in expr and "1 -" in expr:
            assert "increase(monitor_known_seconds_total" in expr, (uid, title)


def test_links_to_the_target_dashboard_never_leave_the_location_empty(
    dashboards: list[dict[str, Any]],
) -> None:
    """A series without a location label links with the current location selection."""
    for dashboard in dashboards:
        for panel in promql.iter_panels(dashboard):
            links = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
            exprs = [t.get("expr", "") for t in panel.get("targets", [])]
            for link in links:
                if "${__field.labels.location}" in link["url"]:
                    assert all(re.search(r"monitor_\w+\{|monitor:target_up:blocked", e)
                               and "by (target)" not in e for e in exprs), \
                        (dashboard["uid"], panel["title"])


async def test_every_record_query_is_answered_by_the_daemon(
    dashboards: list[dict[str, Any]], tmp_path: Path,
) -> None:
    """The Infinity queries against a real `monitor run`: the path, its parameters as Grafana
    fills them in, the root selector and every column selector exist in the answer."""
    from daemon import Daemon
    from servers import HttpServer

    queries = record_queries(dashboards)
    assert queries
    async with HttpServer() as web:
        web.status = 503
        (tmp_path / "monitor.yaml").write_text(f"""\
location: lab
store: {{path: monitor.db}}
defaults: {{interval: 1s, timeout: 500ms, down_after: 2}}
targets:
  - name: site
    url: {web.url("/ok")}
""")
        async with Daemon(tmp_path / "monitor.yaml") as daemon:
            await daemon.wait_for_log(r"site DOWN from lab since")
            now = int(time.time())
            grafana = {"${__from:date:seconds}": str(now - 3600),
                       "${__to:date:seconds}": str(now + 60)}
            for where, query in queries:
                params = "&".join(f"{p['key']}={grafana.get(p['value'], p['value'])}"
                                  for p in query["url_options"]["params"])
                body: Any = None
                for _ in range(100):  # the store writes the outage within a second
                    status, body = await daemon.get_json(f"{query['url']}?{params}")
                    assert status == 200, (where, body)
                    if body[query["root_selector"]]:
                        break
                    await asyncio.sleep(0.1)
                (row,) = body[query["root_selector"]]
                for column in query["columns"]:
                    assert column["selector"] in row, (where, column)
                assert row["ended_at"] is None and row["target"] == "site"


def test_state_timeline_maps_up_and_down(dashboards: list[dict[str, Any]]) -> None:
    overview = next(d for d in dashboards if d["uid"] == "monitor-overview")
    (timeline,) = [p for p in promql.iter_panels(overview) if p["type"] == "state-timeline"]
    assert "monitor_target_up" in timeline["targets"][0]["expr"]
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    assert mapping["options"]["1"]["text"] == "up" and mapping["options"]["1"]["color"] == "green"
    assert mapping["options"]["0"]["text"] == "down" and mapping["options"]["0"]["color"] == "red"


# --- provisioning and compose -------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((promql.ROOT / "compose.yaml").read_text(encoding="utf-8"))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the service's bind mounts (host paths start with ./)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = source
    return found


def test_compose_services_ports_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"monitor", "prometheus", "grafana", "alertmanager"}
    published = {name: s["ports"] for name, s in services.items()}
    assert published == {"monitor": ["127.0.0.1:9321:9321"],
                         "prometheus": ["127.0.0.1:9090:9090"],
                         "grafana": ["127.0.0.1:3000:3000"],
                         "alertmanager": ["127.0.0.1:9093:9093"]}
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
             if not v.startswith(".")}
    assert named and named == set(compose["volumes"])


def test_compose_references_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in mounts(service).items():
            assert (promql.ROOT / source).exists(), f"{name}: {source} (for {target})"
    assert (promql.ROOT / compose["services"]["monitor"]["build"] / "Dockerfile").is_file()


def test_compose_monitor_runs_the_mounted_config_on_all_interfaces(
    compose: dict[str, Any],
) -> None:
    monitor = compose["services"]["monitor"]
    config_path = next(t for t, s in mounts(monitor).items() if s == "./config/monitor.yaml")
    command = monitor["command"]
    # The image's entrypoint is `monitor`, so the command starts at the subcommand.
    assert command[0] == "run"
    assert command[command.index("--config") + 1] == config_path
    assert command[command.index("--listen") + 1] == "0.0.0.0"


def test_prometheus_in_compose_loads_the_shipped_config_and_reaches_the_services(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    config_dir = next(t for t, s in mounts(prometheus).items() if s == "./dashboards/prometheus")
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((promql.PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    assert job["static_configs"][0]["targets"] == ["monitor:9321"]
    (alerting,) = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"]
    alertmanager = compose["services"]["alertmanager"]
    config_file = next(t for t, s in mounts(alertmanager).items()
                       if s == "./dashboards/prometheus/alertmanager.yml")
    assert f"--config.file={config_file}" in alertmanager["command"]


def test_compose_demo_override_runs_the_demo_scraped_from_both_ports(
    compose: dict[str, Any],
) -> None:
    demo = yaml.safe_load((promql.ROOT / "compose.demo.yaml").read_text(encoding="utf-8"))
    monitor = demo["services"]["monitor"]
    assert monitor["command"][:3] == ["demo", "--listen", "0.0.0.0"]
    assert set(monitor["ports"]) == {"127.0.0.1:9321:9321", "127.0.0.1:9322:9322"}
    config_dir = next(t for t, s in mounts(compose["services"]["prometheus"]).items()
                      if s == "./dashboards/prometheus")
    flag = f"--config.file={config_dir}/prometheus.demo.yml"
    assert flag in demo["services"]["prometheus"]["command"]
    config = yaml.safe_load((promql.PROMETHEUS_DIR / "prometheus.demo.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    assert job["static_configs"][0]["targets"] == ["monitor:9321", "monitor:9322"]


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    grafana_mounts = mounts(grafana)
    assert grafana_mounts["/etc/grafana/provisioning"] == "./dashboards/grafana/provisioning"
    dashboards_dir = next(t for t, s in grafana_mounts.items()
                          if s == "./dashboards/grafana/dashboards")

    provider = yaml.safe_load((PROVISIONING / "dashboards" / "monitor.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == dashboards_dir

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    prometheus = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    assert prometheus["uid"] == "prometheus" and prometheus["isDefault"] is True
    assert prometheus["url"] == "http://prometheus:9090"
    record = next(d for d in datasources["datasources"] if d["uid"] == RECORD_REF["uid"])
    assert record["type"] == RECORD_REF["type"]
    assert record["url"] == "http://monitor:9321"  # the monitor service of compose.yaml
    assert record["url"] in record["jsonData"]["allowedHosts"]
    assert RECORD_REF["type"] in grafana["environment"]["GF_INSTALL_PLUGINS"]

    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (promql.DASHBOARD_DIR / home.removeprefix(dashboards_dir + "/")).is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

"""Structure of the shipped Grafana dashboards, their provisioning and compose.yaml.

Offline: no Grafana or Docker here. The dashboards' queries are parsed with promtool;
an integration test runs them against a real Prometheus.
"""

from __future__ import annotations

import json
import re
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
                assert target["expr"].strip(), where


def test_no_hard_coded_datasource(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        refs = datasource_refs(dashboard)
        assert refs
        for where, ref in refs:
            assert ref == DATASOURCE_REF, f"{dashboard['uid']}{where}: {ref!r}"
        # Every panel and every query names the variable itself (no inherited default).
        for panel in promql.iter_panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"] == DATASOURCE_REF
                assert all(t["datasource"] == DATASOURCE_REF for t in panel["targets"])
        for annotation in dashboard["annotations"]["list"]:
            assert annotation["datasource"] == DATASOURCE_REF


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
    for uid, title, expr in promql.raw_dashboard_queries():
        if promql.monitor_metrics(expr) or "monitor:target_up:blocked" in expr:
            assert 'location=~"$location"' in expr, (uid, title, expr)
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
    """The contract as monitor.metrics renders it, not just as DESIGN.md states it."""
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
    (annotation,) = target["annotations"]["list"]
    assert annotation["enable"] is True
    assert re.fullmatch(r'monitor_target_up\{.*\} == 0', annotation["expr"])


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

    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (promql.DASHBOARD_DIR / home.removeprefix(dashboards_dir + "/")).is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

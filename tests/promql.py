"""Shared helpers for tests of the shipped dashboards and Prometheus rules.

Loads the Grafana dashboards in dashboards/grafana/dashboards/, walks their panels
(including panels nested in rows), extracts every PromQL expression with the dashboard
variables substituted, reads the rule files in dashboards/prometheus/, and holds the
metrics contract of docs/design.md as data. Also wraps `promtool` to parse expressions.

Imports the standard library, PyYAML and pytest; nothing from the monitor package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards" / "grafana" / "dashboards"
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
RULE_FILES = (PROMETHEUS_DIR / "recording.rules.yml", PROMETHEUS_DIR / "alerts.rules.yml")

# The metrics contract (docs/design.md, README's Metrics table); histograms with their series.
METRIC_CONTRACT: frozenset[str] = frozenset({
    "monitor_target_info",
    "monitor_probe_success",
    "monitor_probe_duration_seconds_bucket",
    "monitor_probe_duration_seconds_sum",
    "monitor_probe_duration_seconds_count",
    "monitor_probe_phase_seconds",
    "monitor_probes_total",
    "monitor_http_status_code",
    "monitor_tls_cert_expiry_timestamp_seconds",
    "monitor_target_up",
    "monitor_outages_total",
    "monitor_downtime_seconds_total",
    "monitor_uptime_ratio",
    "monitor_scheduler_lateness_seconds_bucket",
    "monitor_scheduler_lateness_seconds_sum",
    "monitor_scheduler_lateness_seconds_count",
    "monitor_notifications_total",
    "monitor_config_reload_success",
    # Added as built (docs/design.md: extend, never rename).
    "monitor_known_seconds_total",
    "monitor_target_state_since_timestamp_seconds",
    "monitor_outage_open_since_timestamp_seconds",
    "monitor_outage_info",
    "monitor_scheduler_missed_runs_total",
    "monitor_store_errors_total",
    "monitor_notification_queue",
    "monitor_config_last_reload_success_timestamp_seconds",
    "monitor_offline",
    "monitor_probes_in_flight",
    "monitor_event_loop_lag_seconds_bucket",
    "monitor_event_loop_lag_seconds_sum",
    "monitor_event_loop_lag_seconds_count",
})

# What a running Prometheus should see for each variable: `.+` matches every value of a
# label every series carries, as Grafana's "All" does (the dashboards' allValue is `.+`).
# The built-in intervals get fixed values so the expressions are plain PromQL.
VARIABLE_VALUES: dict[str, str] = {
    "location": ".+",
    "target": ".+",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
}

# $name, ${name} and ${name:format}; Grafana's [[name]] form is deprecated and not used.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)")
_MONITOR_METRIC = re.compile(r"(?<![\w:])monitor_[a-zA-Z0-9_]+")
_RECORDED_METRIC = re.compile(r"(?<![\w:])monitor:[a-zA-Z0-9_:]+")


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboards() -> list[dict[str, Any]]:
    """Every shipped dashboard, parsed."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in dashboard_paths()]


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, values: Mapping[str, str] = VARIABLE_VALUES) -> str:
    """`expr` with Grafana variables replaced; an unknown variable raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def raw_dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title or "annotation: name", expr) before substitution."""
    queries: list[tuple[str, str, str]] = []
    for dashboard in load_dashboards():
        uid = dashboard["uid"]
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr") and not target.get("hide"):
                    queries.append((uid, panel["title"], target["expr"]))
        for annotation in dashboard.get("annotations", {}).get("list", []):
            expr = annotation.get("expr") or annotation.get("target", {}).get("expr")
            if expr:
                queries.append((uid, f"annotation: {annotation['name']}", expr))
    return queries


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every PromQL query of every dashboard.

    Panel targets and annotation queries (titled "annotation: <name>"), with $location and
    $target as `.+` and $__range=1h, $__rate_interval=1m, $__interval=1m: ready to send to
    a running Prometheus.
    """
    return [(uid, title, substitute(expr)) for uid, title, expr in raw_dashboard_queries()]


def load_rule_groups(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]


def rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of the shipped rule files."""
    return [rule for path in RULE_FILES for group in load_rule_groups(path)
            for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def monitor_metrics(expr: str) -> set[str]:
    """The `monitor_*` metric names an expression uses (not recording rule names)."""
    return set(_MONITOR_METRIC.findall(expr))


def recorded_metrics(expr: str) -> set[str]:
    """The `monitor:*` recording rule names an expression uses."""
    return set(_RECORDED_METRIC.findall(expr))


def require_promtool() -> str:
    """Path of promtool. Skips the test if it is missing, unless in CI (CI set): then fails."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI: install Debian's `prometheus` package")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_promtool(), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def check_expressions(
    exprs: list[tuple[str, str]], tmp_dir: Path
) -> subprocess.CompletedProcess[str]:
    """Parse PromQL with `promtool check rules`: each (name, expr) becomes a recording rule.

    promtool has no plain "parse" command, but checking a rule file parses every
    expression in it. One group per expression, named after it, so an error says which.
    """
    groups = [{"name": f"{i}: {name}", "rules": [{"record": f"parsed:expr_{i}", "expr": expr}]}
              for i, (name, expr) in enumerate(exprs)]
    path = tmp_dir / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return run_promtool("check", "rules", str(path))

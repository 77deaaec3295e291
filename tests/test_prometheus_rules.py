"""The shipped Prometheus files: scrape config, recording and alerting rules, their promtool
unit tests, and the Alertmanager example.

promtool comes from Debian's `prometheus` package; without it these tests skip, except in
CI (CI set), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql
import pytest
import yaml

DIR = promql.PROMETHEUS_DIR
UNIT_TESTS = sorted(DIR.glob("*.test.yml"))
SEVERITIES = {"critical", "warning", "info"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in promql.rules() if "alert" in rule]


def test_promtool_check_config() -> None:
    result = promql.run_promtool("check", "config", "prometheus.yml", cwd=DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule files are found through paths relative to the config file.
    assert "SUCCESS: 2 rule files found" in result.stdout
    result = promql.run_promtool("check", "config", str(DIR / "prometheus.yml"), cwd=Path("/"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promql.run_promtool("check", "config", "prometheus.demo.yml", cwd=DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promql.run_promtool("check", "rules", *map(str, promql.RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(promql.RULE_FILES)


def test_promtool_unit_tests_pass() -> None:
    assert {p.name for p in UNIT_TESTS} == {"alerts.test.yml", "recording.test.yml"}
    result = promql.run_promtool("test", "rules", *(p.name for p in UNIT_TESTS), cwd=DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests compare alerts exactly: a changed expectation must fail."""
    for rule_file in promql.RULE_FILES:
        shutil.copy(rule_file, tmp_path)
    text = (DIR / "alerts.test.yml").read_text(encoding="utf-8")
    broken = text.replace("target: rt}", "target: kremlin}", 1)
    assert broken != text
    (tmp_path / "alerts.test.yml").write_text(broken, encoding="utf-8")
    result = promql.run_promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "TargetDownEverywhere" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    names = promql.alert_names()
    assert len(names) == len(set(names))
    assert {"TargetDownEverywhere", "TargetBlockedSomewhere", "ProbesSlow",
            "CertificateExpiringSoon", "CertificateExpiringCritical", "CertificateExpired",
            "TargetUptimeBelowObjective", "MonitorNotScraped", "ProbesRunningLate",
            "MonitorMissedRuns", "MonitorProbesStalled", "MonitorStoreErrors",
            "MonitorConfigReloadFailed", "NotificationsFailing",
            "NotificationsRetrying"} <= set(names)
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    # promtool passes a test of a misspelt alert that never fires: catch that here.
    assert (firing | quiet) - set(names) == set()
    assert set(names) - firing == set(), "alerts without a firing case"
    assert set(names) - quiet == set(), "alerts without a case where they stay quiet"


def test_unit_tests_load_the_shipped_rule_files() -> None:
    for path in UNIT_TESTS:
        for rule_file in load(path)["rule_files"]:
            assert (path.parent / rule_file).resolve() in {p.resolve() for p in promql.RULE_FILES}


def test_an_outage_pages_without_a_for_on_top_of_the_monitors_confirmation() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "TargetDownEverywhere"]
    assert "for" not in rule and "keep_firing_for" not in rule
    # Read from the scrape, not from a recorded verdict one evaluation later.
    assert "monitor_target_up" in rule["expr"] and "monitor:target_up:down" not in rule["expr"]
    # The record's facts reach the page.
    assert {"started", "cause", "first_error", "dashboard"} <= rule["annotations"].keys()
    assert "humanizeTimestamp" in rule["annotations"]["started"]


def test_the_unit_tests_cover_missed_scrapes_and_monitors_that_went_away() -> None:
    names = {test["name"] for path in UNIT_TESTS for test in load(path)["tests"]}
    assert any("missed scrape" in n for n in names)
    assert any("stops being scraped" in n for n in names)


def test_alerts_carry_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_recording_rule_names_follow_the_convention() -> None:
    for name in promql.recorded_names():
        assert re.fullmatch(r"monitor:[a-z_]+:[a-z0-9_]+", name), name
    assert {"monitor:target_up:locations", "monitor:target_up:locations_down",
            "monitor:probe_duration_seconds:p95"} <= promql.recorded_names()


def test_scrape_config_example() -> None:
    config = load(DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    assert job["scrape_interval"] == "15s"
    assert all(t.endswith(":9321") for c in job["static_configs"] for t in c["targets"])
    assert [DIR / f for f in config["rule_files"]] == list(promql.RULE_FILES)


def test_the_demo_config_runs_the_production_rules_at_the_demos_pace() -> None:
    demo = load(DIR / "prometheus.demo.yml")
    production = load(DIR / "prometheus.yml")
    assert demo["rule_files"] == production["rule_files"]
    assert demo["alerting"] == production["alerting"]
    # The demo probes every 2 s: scrape and evaluate every 5 s, for every job.
    assert demo["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert all("scrape_interval" not in job for job in demo["scrape_configs"])


def test_alertmanager_example() -> None:
    config = load(DIR / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in config["route"].get("routes", []))
    assert any(r.get("webhook_configs") for r in config["receivers"])
    # Inhibition rules must name alerts that exist.
    names = set(promql.alert_names())
    for rule in config.get("inhibit_rules", []):
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname=~?"(.+)"', matcher)
            assert match, matcher
            for name in match.group(1).split("|"):
                assert name in names, name


def test_amtool_accepts_the_alertmanager_example() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:  # Debian's prometheus-alertmanager package, which .ci/run installs
        if os.environ.get("CI"):
            pytest.fail("amtool is required in CI: install Debian's prometheus-alertmanager")
        pytest.skip("amtool not installed (Debian: apt-get install prometheus-alertmanager)")
    result = subprocess.run([amtool, "check-config", str(DIR / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

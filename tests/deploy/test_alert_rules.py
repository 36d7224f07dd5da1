"""deploy/prometheus/rules.yml: `promtool check` accepts it and the config that loads it,
`promtool test rules` passes its unit tests (rules_test.yml), and what an operator relies on
holds: every alert waits (`for`), has a severity, a summary and description, and a runbook that
is a section of docs/operations.md; every alert is tested firing and quiet; recording rules are
named level:metric:operation; the dashboard and docs/metrics.md use and list them."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.test_links import anchors

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules_test.yml"
RECORDED = re.compile(r"^[a-z_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
RECORDED_IN_QUERY = re.compile(r"(?<![\w:])([a-z_]*:[a-z][a-z0-9_]*:[a-z0-9_]+)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    binary = shutil.which("promtool")
    assert binary, (
        "promtool is missing: it comes with Debian's prometheus package. `make test` installs "
        "it (python -m devstack.system prometheus, as root), or: sudo apt-get install -y "
        "prometheus"
    )
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_in(query: str) -> list[str]:
    """The recording rules a PromQL query reads (names inside label values are not)."""
    return RECORDED_IN_QUERY.findall(STRING.sub('""', query))


def records() -> list[str]:
    return [rule["record"] for rule in rules() if "record" in rule]


def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    assert "SUCCESS" in promtool("check", "rules", "rules.yml")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    promtool("check", "config", "prometheus.yml")


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_every_alert_waits_and_says_what_and_where_to_look() -> None:
    sections = anchors((ROOT / "docs" / "operations.md").read_text())
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("for"), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/operations.md", name
        assert anchor == name.lower() and anchor in sections, f"{name}: no section #{anchor}"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in (alert["alert"] for alert in alerts()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} never tested quiet"


def test_recording_rules_are_named_level_metric_operation() -> None:
    names = records()
    assert len(names) == len(set(names))
    for name in names:
        assert RECORDED.match(name), name
    # What a rule reads is recorded before it, in the same group (evaluated in order).
    seen: set[str] = set()
    for rule in rules():
        for used in recorded_in(rule["expr"]):
            assert used in seen, f"{rule.get('record') or rule['alert']} reads {used} first"
        if "record" in rule:
            seen.add(rule["record"])


def test_the_dashboard_reads_the_recording_rules() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    recorded = set(records())
    for panel in dashboard["panels"]:
        expressions = [target["expr"] for target in panel["targets"]]
        used = [name for expr in expressions for name in recorded_in(expr)]
        assert used, f"panel {panel['title']!r} reads no recording rule"
        assert set(used) <= recorded, (panel["title"], set(used) - recorded)


def test_metrics_md_lists_every_rule() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    missing = [name for name in records() if f"`{name}`" not in text]
    missing += [alert["alert"] for alert in alerts() if f"`{alert['alert']}`" not in text]
    assert not missing, f"docs/metrics.md does not list {missing}"


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("sum(route:a_b:rate5m) / :c:max", ["route:a_b:rate5m", ":c:max"]),
        ('x{route="a:b:c"} + route:a:b', ["route:a:b"]),
    ],
)
def test_the_checks_own_reading(query: str, names: list[str]) -> None:
    assert recorded_in(query) == names

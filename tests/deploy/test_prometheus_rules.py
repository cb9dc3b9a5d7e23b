"""deploy/prometheus: promtool checks the rules and the example config and runs the unit tests.

promtool comes with Debian's ``prometheus`` (``make system-deps``); without it these tests fail.
Beyond promtool: every alert carries what on-call needs (severity, summary, description, a
runbook link that resolves to a README heading), and the unit tests cover every alert both firing
and not firing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rmm-sensor.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rmm-sensor.rules.test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_ALERTING = REPO / "deploy" / "grafana" / "provisioning" / "alerting" / "rmm-sensor.yml"
README = REPO / "README.md"

ALERTS = (
    "UnexpectedRmmSession",
    "RmmExploitAttempt",
    "OutdatedRmmServer",
    "RmmToolChain",
    "SensorDown",
    "SensorNoTraffic",
    "SensorDroppingPackets",
    "ConfigReloadFailed",
    "SensorAlertOutputFailing",
)
SEVERITIES = ("critical", "warning")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run `make system-deps` (Debian package prometheus)")
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- promtool -----------------------------------------------------------------------------------


def test_check_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_check_config_loads_the_rules() -> None:
    done = promtool("check", "config", CONFIG.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    assert "SUCCESS: 10 rules found" in done.stdout


@pytest.mark.parametrize(
    ("find", "replace", "complaint"),
    [
        ("drops_total[5m]) > 0", "drops_total[5m] > 0", "parse error"),
        ("        for: 2m", "        for: 2 minutes", "not a valid duration string"),
    ],
    ids=["bad-promql", "bad-duration"],
)
def test_check_rules_rejects_a_broken_copy(
    tmp_path: Path, find: str, replace: str, complaint: str
) -> None:
    """promtool really parses the file: a damaged copy fails."""
    text = RULES.read_text()
    assert find in text
    (tmp_path / RULES.name).write_text(text.replace(find, replace))
    done = promtool("check", "rules", RULES.name, cwd=tmp_path)
    assert done.returncode != 0
    assert complaint in (done.stdout + done.stderr).lower()


def test_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """The unit tests bite: a threshold moved by one changes what fires."""
    text = RULES.read_text().replace("vector(600)", "vector(660)")
    (tmp_path / RULES.name).write_text(text)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "SensorNoTraffic" in done.stdout + done.stderr


# --- what on-call gets --------------------------------------------------------------------------


def test_the_expected_alerts_exist() -> None:
    assert [r["alert"] for r in alerting_rules()] == list(ALERTS)


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_is_actionable(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert "$labels.instance" in notes["summary"] + notes["description"]
    assert "First:" in notes["description"], "say what to check first"
    assert notes["runbook_url"] == f"README.md#{rule['alert'].lower()}"


def _github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_anchors() -> set[str]:
    return {
        _github_anchor(m.group(1))
        for m in re.finditer(r"^#{1,6} (.+)$", README.read_text(), flags=re.MULTILINE)
    }


def runbook_links() -> list[tuple[str, str]]:
    links = [(r["alert"], r["annotations"]["runbook_url"]) for r in alerting_rules()]
    grafana = yaml.safe_load(GRAFANA_ALERTING.read_text())
    links += [
        (f"grafana:{rule['uid']}", rule["annotations"]["runbook_url"])
        for group in grafana["groups"]
        for rule in group["rules"]
    ]
    return links


@pytest.mark.parametrize(("alert", "link"), runbook_links())
def test_runbook_link_resolves_to_a_readme_heading(alert: str, link: str) -> None:
    page, _, anchor = link.partition("#")
    assert page == "README.md"
    assert anchor in readme_anchors(), f"{alert}: no README heading for #{anchor}"


def test_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == set(ALERTS)
    assert quiet == set(ALERTS)


def test_no_traffic_threshold_is_a_documented_knob() -> None:
    text = RULES.read_text()
    assert "record: rmm_sensor:no_traffic_threshold_seconds" in text
    assert "rmm_sensor:no_traffic_threshold_seconds" in README.read_text()
    (no_traffic,) = [r for r in alerting_rules() if r["alert"] == "SensorNoTraffic"]
    assert "rmm_sensor:no_traffic_threshold_seconds" in no_traffic["expr"]
    assert 'up{job="rmm-sensor"} == 1' in no_traffic["expr"]

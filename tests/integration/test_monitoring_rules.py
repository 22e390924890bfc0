"""The alerts of the monitoring kit, checked by Prometheus's own promtool: the rules parse, and each
alert's unit tests (tests/integration/promtool/alerts_test.yaml) show it firing and staying quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ..servers import REPO

RULE = REPO / "deploy" / "monitoring" / "prometheusrule.yaml"
CASES = Path(__file__).parent / "promtool" / "alerts_test.yaml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: apt-get install prometheus (.ci/run does)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULE.read_text())["spec"]["groups"] for rule in group["rules"]]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside a copy of the unit tests."""
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(CASES, tmp_path / CASES.name)
    return tmp_path


def test_the_rules_parse(rules_dir):
    done = promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_only_then(rules_dir):
    done = promtool("test", "rules", CASES.name, cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = [check for case in yaml.safe_load(CASES.read_text())["tests"] for check in case["alert_rule_test"]]
    for alert in alerts():
        mine = [check for check in checks if check["alertname"] == alert["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{alert['alert']}: no case where it fires"
        assert any(not check["exp_alerts"] for check in mine), f"{alert['alert']}: no case where it stays quiet"

"""A figure the docs quote in several places has one source, and every quote agrees with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from model_store import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in (REPO / "docs").glob("*.md")}


def test_the_start_up_time_is_the_headlines():
    """Measured once (docs/performance.md's headline); quoted as that figure; the probes' comments point
    at the container's measurement instead of a number of their own."""
    source = re.search(r"Ready ([\d.]+) s after `bentoml serve`", DOCS["performance.md"])[1]
    texts = [README, *(text for name, text in DOCS.items() if name != "performance.md")]
    quotes = [q for text in texts for q in re.findall(r"ready ([\d.]+) s after `bentoml serve`", text, re.IGNORECASE)]
    assert quotes, "README quotes the start-up time"
    assert set(quotes) == {source}
    for path in ("deploy/k8s/base/deployment.yaml", "deploy/Dockerfile.template"):
        text = (REPO / path).read_text()
        assert not re.search(r"about \d+ s|\d+ s on 2 (CPU )?cores", text), path
        assert "docs/deployment.md#the-container" in text, path


def test_the_load_test_tables_duration_is_the_commands():
    duration = re.search(r"^DURATION \?= (\d+)s$", (REPO / "Makefile").read_text(), re.MULTILINE)[1]
    load_test = README.split("## Load test\n", 1)[1]
    (caption,) = re.findall(r"over (\d+) s with the default mix", load_test)
    assert caption == duration


def test_the_precision_setting_names_every_precision_auto_may_choose_on_the_cpu():
    described = Settings.model_fields["precision"].description.split("auto:", 1)[1]
    row = r"^\| `PYRAMIDNET_PRECISION` \| `auto` \| `auto` \(([^)]*)"
    documented = re.search(row, DOCS["configuration.md"], re.MULTILINE)[1]
    for precision in ("int8", "bf16", "fp32"):
        assert precision in described
        assert precision in documented


def test_readmes_training_recipe_is_the_model_cards_command():
    card = re.search(r"^\| training command \| (.+) \|$", README, re.MULTILINE)[1]
    recipe = next(line for line in README.splitlines() if line.startswith("python scripts/train.py"))
    assert recipe == card


def test_the_shedding_alerts_row_names_every_route_its_rule_counts():
    rules = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheusrule.yaml").read_text())
    (rule,) = [r for g in rules["spec"]["groups"] for r in g["rules"] if r["alert"] == "PyramidNetShedding"]
    routes = re.search(r'route=~"([^"]+)"', rule["expr"])[1].split("|")
    row = next(line for line in DOCS["deployment.md"].splitlines() if line.startswith("  | `PyramidNetShedding` |"))
    for route in routes:
        named = "the Open Inference Protocol's inference routes" if route.startswith("/v2/") else f"`{route}`"
        assert named in row, route


def test_the_overlays_ask_for_the_cores_the_api_workers_were_measured_on_or_say_so():
    """api_worker_count is measured up to 2 cores: the CPU overlay asks for 2; the GPU overlay, which
    asks for more, says that it is untested there."""
    assert "Untested above 2 cores" in " ".join(Settings.api_worker_count.__doc__.split())
    cpu = yaml.safe_load((REPO / "deploy" / "k8s" / "overlays" / "cpu" / "resources.yaml").read_text())
    limits = cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == "2"
    gpu = (REPO / "deploy" / "k8s" / "overlays" / "gpu" / "gpu.yaml").read_text()
    assert "untested above 2 cores" in " ".join(gpu.split())


def test_the_architecture_pages_layer_table_is_the_layers_contract():
    """docs/architecture.md's table of layers lists the modules of each layer of import-linter's
    contract, in its order: the page cannot drift from what `make lint` checks."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["id"] == "layers"]
    table = DOCS["architecture.md"].split("| layer | modules | concern |\n| --- | --- | --- |\n")[1].split("\n\n")[0]
    documented = [sorted(re.findall(r"`([a-z_0-9]+)`", row.split(" | ")[1])) for row in table.splitlines()]
    assert documented == [sorted(m.strip() for m in layer.split("|")) for layer in layers]

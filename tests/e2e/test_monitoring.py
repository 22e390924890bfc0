"""The monitoring kit against a real Prometheus scraping a real `bentoml serve` every second, through
idle, steady load, a retry storm of 256 clients sending 8 images each, and idle again: every query
the autoscalers, the alerts, the dashboard and the canary analysis use returns data, the scaling
metric follows the storm, the shedding alert knows when it is on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from bench.hey import hey, multipart

from ..servers import REPO, Server, free_port, start_server, stop_server

pytestmark = pytest.mark.alone  # a storm timed against Prometheus's scrapes: nothing runs beside it (make test)

MONITORING = REPO / "deploy" / "monitoring"
KEDA = REPO / "deploy" / "k8s" / "components" / "keda" / "scaledobject" / "scaledobject.yaml"
ANALYSIS = REPO / "deploy" / "k8s" / "components" / "canary" / "analysistemplate.yaml"
HPA = REPO / "deploy" / "k8s" / "base" / "hpa.yaml"
JOB = "pyramidnet"  # the job the ServiceMonitor gives the pods (the Service's name)
# The labels Prometheus gives each series of a pod: its namespace, and (ServiceMonitor's
# podTargetLabels) the rollouts-pod-template-hash Argo Rollouts sets on it.
TARGET_LABELS = {"namespace": "pyramidnet", "rollouts_pod_template_hash": "6d5f8b9c7"}
STORM_CLIENTS = 256
# Images per storm request: 2,048 in flight are over the 2 s admission budget on any CPU slower than
# 1,000 images/s. 256 single images were not on a Zen 4 (bf16, about 330 images/s): nothing shed.
STORM_IMAGES = 8


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def range(self, expr: str, start: float, end: float) -> list[tuple[float, float]]:
        """(time, value) of `expr` every second from start to end, over all its series (NaNs dropped)."""
        answer = httpx.get(
            f"{self.url}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": 1}, timeout=30
        ).json()
        assert answer["status"] == "success", (expr, answer)
        return sorted(
            (float(t), float(v)) for series in answer["data"]["result"] for t, v in series["values"] if v != "NaN"
        )


@dataclass
class Phases:
    """When each phase of the run began (wall clock, as Prometheus stamps its samples)."""

    started: float = 0.0
    steady: float = 0.0
    storm: float = 0.0
    storm_end: float = 0.0
    ended: float = 0.0
    notes: dict[str, object] = field(default_factory=dict)


def rules() -> list[dict]:
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]["groups"]


def scaling_query() -> tuple[str, float]:
    """The adapter rule's query as prometheus-adapter sends it for the pods here, and the HPA's target."""
    rule = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"][0]
    hpa = yaml.safe_load(HPA.read_text())
    (metric,) = hpa["spec"]["metrics"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", re.match(r"\w+", rule["seriesQuery"]).group())
        .replace("<<.LabelMatchers>>", f'job="{JOB}"')
        .replace("<<.GroupBy>>", "instance")
    )
    return query, float(metric["pods"]["target"]["averageValue"])


def dashboard_queries() -> dict[str, str]:
    """Every panel's queries, with the dashboard's variables as Grafana fills them here."""
    dashboard = json.loads((MONITORING / "pyramidnet-dashboard.json").read_text())
    return {
        f"{panel['title']} [{target['refId']}]": target["expr"]
        .replace("$job", JOB)
        .replace("$__rate_interval", "4s")  # four scrape intervals, as Grafana chooses it
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


@pytest.fixture(scope="module")
def served(default_model, tmp_path_factory) -> Iterator[Server]:
    """The default settings (a 2 s admission budget), with two API workers: the gauges add up across them."""
    srv = start_server(str(default_model.tag), tmp_path_factory.mktemp("monitored") / "serve.log", api_workers="2")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def prometheus(served: Server, tmp_path_factory) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not found: apt-get install prometheus (.ci/run does)")
    home = tmp_path_factory.mktemp("prometheus")
    (home / "rules.yaml").write_text(yaml.safe_dump({"groups": rules()}, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(home / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [served.url.removeprefix("http://")], "labels": TARGET_LABELS}],
            }
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=(home / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:  # stopped whatever happens, a failed start included
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # up, and its first scrape of the service done
            try:
                up = httpx.get(f"{server.url}/api/v1/query", params={"query": f'up{{job="{JOB}"}}'})
                if up.status_code == 200 and [r["value"][1] for r in up.json()["data"]["result"]] == ["1"]:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            assert process.poll() is None, (home / "prometheus.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus did not scrape the service:\n{(home / 'prometheus.log').read_text()[-2000:]}")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def load(url: str, body: Path, clients: int, seconds: float) -> None:
    """Closed-loop clients that retry at once: hey when installed, else a bounded Python loop."""
    if shutil.which("hey"):
        hey(url, body, clients, duration=seconds)
        return
    data, headers = body.read_bytes(), {"content-type": "multipart/form-data; boundary=bench0boundary"}
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < stop:
                c.post(url, content=data, headers=headers)

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)


@pytest.fixture(scope="module")
def run(served: Server, prometheus: Prometheus, sample_jpegs, tmp_path_factory) -> Phases:
    """Idle (3 s), steady load (4 clients, one image each, 6 s), the storm (256 clients, 8 images each, 20 s),
    then idle until the scaling metric is back under its target (at most 30 s) and 3 s more."""
    bodies = tmp_path_factory.mktemp("load")
    one, batch = bodies / "one.multipart", bodies / "batch.multipart"
    one.write_bytes(multipart("image", [sample_jpegs[0].read_bytes()]))
    batch.write_bytes(multipart("images", [p.read_bytes() for p in sample_jpegs[:STORM_IMAGES]]))
    query, target = scaling_query()
    phases = Phases(started=time.time())
    time.sleep(3)
    phases.steady = time.time()
    load(served.url + "/classify", one, 4, 6)
    phases.storm = time.time()
    load(served.url + "/classify_batch", batch, STORM_CLIENTS, 20)
    phases.storm_end = time.time()
    deadline = phases.storm_end + 30
    while time.time() < deadline:
        time.sleep(1)
        recent = prometheus.range(query, time.time() - 1, time.time())
        if recent and recent[-1][1] < target:
            break
    time.sleep(3)
    phases.ended = time.time()
    return phases


def test_every_query_of_the_kit_returns_data(prometheus, run):
    """No dead panel, no misspelt metric: each query has values during the run."""
    scaling, _ = scaling_query()
    keda = yaml.safe_load(KEDA.read_text())["spec"]["triggers"][0]["metadata"]["query"]
    queries = {"prometheus-adapter rule": scaling, "KEDA trigger": keda, **dashboard_queries()}
    dead = [name for name, expr in queries.items() if not prometheus.range(expr, run.started, run.ended)]
    assert not dead, dead
    # An alert's expression has values only while it holds: each metric it reads must have series.
    for group in rules():
        for rule in group["rules"]:
            for metric in set(re.findall(rf'\bpyramidnet_\w+|\bup\{{job="{JOB}"\}}', rule["expr"])):
                assert prometheus.range(f"count({metric})", run.started, run.ended), (rule["alert"], metric)


def analysis_queries() -> dict[str, str]:
    """The canary analysis's queries with its arguments as a Rollout gives them: the new and the old pods
    both this server (its hash), and the template's defaults."""
    template = yaml.safe_load(ANALYSIS.read_text())["spec"]
    args = {arg["name"]: arg.get("value") for arg in template["args"]} | {
        "namespace": TARGET_LABELS["namespace"],
        "canary-hash": TARGET_LABELS["rollouts_pod_template_hash"],
        "stable-hash": TARGET_LABELS["rollouts_pod_template_hash"],
    }
    queries = {metric["name"]: metric["provider"]["prometheus"]["query"] for metric in template["metrics"]}
    return {name: re.sub(r"\{\{args\.([\w-]+)\}\}", lambda arg: args[arg[1]], q) for name, q in queries.items()}


def test_every_query_of_the_canary_analysis_reads_what_the_pods_export(prometheus, run):
    """Each query answers, and each of its selectors (the labels a pod's series carry, the routes, the
    0.5 confidence bucket) finds series: only the error codes it counts may be absent (none happened)."""
    for name, query in analysis_queries().items():
        assert prometheus.range(query, run.started, run.ended), name
        for selector in re.findall(r"pyramidnet_\w+\{[^}]*\}", query):
            found = re.sub(r',\s*code=~?"[^"]*"', "", selector)
            assert prometheus.range(f"count({found})", run.started, run.ended), (name, selector)


def test_the_scaling_metric_rises_with_the_storm_and_falls_after_it(prometheus, run):
    query, target = scaling_query()
    series = prometheus.range(query, run.started, run.ended)
    before = [v for t, v in series if t < run.storm]
    assert before, series
    assert max(before) < target, f"over the target before the storm: {before}"  # busy is not drowning
    risen = next(t for t, v in series if t >= run.storm and v > target)
    assert risen - run.storm <= 15, series
    fallen = next(t for t, v in series if t >= run.storm_end and v < target)
    assert fallen - run.storm_end <= 30, series


def test_the_shedding_alert_holds_in_the_storm_only(prometheus, run):
    (shedding,) = (r["expr"] for g in rules() for r in g["rules"] if r["alert"] == "PyramidNetShedding")
    held = [t for t, _ in prometheus.range(shedding, run.started, run.ended)]
    assert not [t for t in held if t < run.storm], "true at idle or under steady load"
    assert [t for t in held if run.storm <= t <= run.storm_end + 1], "false during the storm"


def test_the_storm_timeline(prometheus, run, capsys):
    """The run as an operator would read it from Prometheus, every 2 s (shown with -s; docs/operations.md
    quotes one): the scaling metric, the shed rate, p99 of the answered requests, and the cost of a scrape."""
    query, target = scaling_query()
    columns = {
        "wait s": query,
        "in flight": f'sum(pyramidnet_images_in_flight{{job="{JOB}"}})',
        "shed/s": f'sum(rate(pyramidnet_shed_requests_total{{job="{JOB}"}}[4s]))',
        "ok/s": f'sum(rate(pyramidnet_requests_total{{job="{JOB}", code="OK"}}[4s]))',
        "p99 ok s": "histogram_quantile(0.99, sum by (le) (rate(pyramidnet_request_duration_seconds_bucket"
        f'{{job="{JOB}", code="OK"}}[4s])))',
        "scrape ms": f'scrape_duration_seconds{{job="{JOB}"}} * 1000',
    }
    values = {name: dict(prometheus.range(expr, run.started, run.ended)) for name, expr in columns.items()}
    assert values["scrape ms"], "Prometheus recorded no scrape"
    lines = [f"{'t s':>6} {'phase':<7}" + "".join(f"{name:>11}" for name in columns)]
    for t in sorted(values["wait s"])[::2]:
        phase = "idle" if t < run.steady else "steady" if t < run.storm else "STORM" if t < run.storm_end else "after"
        cells = "".join(f"{values[name].get(t, float('nan')):>11.3f}" for name in columns)
        lines.append(f"{t - run.storm:>6.0f} {phase:<7}{cells}")
    shed_at = [t for t, v in values["shed/s"].items() if v > 0]
    assert shed_at, "nothing shed"
    assert min(shed_at) >= run.storm, "shed before the storm"
    storm_scrapes = [v for t, v in values["scrape ms"].items() if run.storm <= t <= run.storm_end]
    lines.append(f"scaling target {target} s; scrape during the storm: max {max(storm_scrapes):.1f} ms")
    samples = prometheus.range(f'scrape_samples_scraped{{job="{JOB}"}}', run.storm, run.storm_end)
    lines.append(f"samples per scrape: {int(max(v for _, v in samples))}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))

"""The gauges across worker processes, as BentoML's /metrics collects them (prometheus_client's
multiprocess mode): each gauge combines its workers' values the way its meaning needs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from model_store import telemetry
    in_flight, wait = float(sys.argv[1]), float(sys.argv[2])
    telemetry.IMAGES_IN_FLIGHT.set(in_flight)
    telemetry.EXPECTED_WAIT.set(wait)
    telemetry.READY.set(1)
    telemetry.REQUESTS.labels("/classify", "OK").inc(in_flight)
    print(os.getpid())
    """
)


def worker(directory: str, in_flight: int, wait: float) -> int:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(in_flight), str(wait)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def scrape(directory: str) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith("pyramidnet_")
    }


def test_in_flight_adds_the_live_workers_and_the_wait_is_the_latest_estimate(tmp_path):
    directory = str(tmp_path)
    first = worker(directory, 3, 0.5)
    worker(directory, 4, 0.25)  # written later: the current estimate of the whole server
    seen = scrape(directory)
    assert seen[("pyramidnet_images_in_flight", ())] == 7
    assert seen[("pyramidnet_expected_wait_seconds", ())] == 0.25
    assert seen[("pyramidnet_ready", ())] == 1  # one series, not one per process
    assert seen[("pyramidnet_requests_total", (("code", "OK"), ("route", "/classify")))] == 7
    mark_process_dead(first, directory)  # as BentoML's metrics client does when its worker exits
    after = scrape(directory)
    assert after[("pyramidnet_images_in_flight", ())] == 4  # a dead worker holds no images
    assert after[("pyramidnet_requests_total", (("code", "OK"), ("route", "/classify")))] == 7  # counts stay

"""Stopping a real server: SIGTERM finishes what was accepted, Ctrl-C during the load stops in seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..servers import start_server

pytestmark = pytest.mark.alone  # draining and stopping are timed: nothing runs beside it (make test)


def test_sigterm_finishes_every_accepted_request(default_model, tmp_path, sample_jpegs):
    # Generous admission: this is about the drain, not about shedding.
    srv = start_server(str(default_model.tag), tmp_path / "serve.log", max_latency_ms="20000", max_wait_s="60")
    images = [p.read_bytes() for p in sample_jpegs[:40]]
    local = threading.local()
    answered, busy = Counter(), threading.Event()
    sent_at: list[float] = []

    def call(i: int) -> tuple[float, float, str]:
        if not hasattr(local, "client"):  # one client per thread: the load is the server's, not the client's setup
            local.client = httpx.Client(timeout=120, headers={"Connection": "close"})
        # Eight images a request keep each one inside the server for a while: some are there at SIGTERM.
        parts = [("images", (f"{k}.jpg", images[(i + k) % len(images)], "image/jpeg")) for k in range(8)]
        start = time.monotonic()
        try:
            response = local.client.post(srv.url + "/classify_batch", files=parts)
        except httpx.ConnectError:
            return start, time.monotonic(), "refused"  # not accepted: the port was closed
        except httpx.RemoteProtocolError as e:
            # Closed before any response: the server never took the request (a client retries).
            return start, time.monotonic(), "not-taken" if "without sending" in str(e) else "lost"
        except httpx.ReadError:
            return start, time.monotonic(), "not-taken"
        try:
            ok = response.status_code == 200 and len(response.json()) == 8
        except ValueError:
            ok = False
        answered["ok"] += ok
        if answered["ok"] >= 20:
            busy.set()
        return start, time.monotonic(), "ok" if ok else f"lost:{response.status_code}:{response.text[:200]}"

    def terminate_when_busy() -> None:
        busy.wait(120)  # the server is answering at full speed
        sent_at.append(time.monotonic())
        srv.process.send_signal(signal.SIGTERM)

    with ThreadPoolExecutor(24) as pool:
        threading.Thread(target=terminate_when_busy, daemon=True).start()
        results = list(pool.map(call, range(400)))
    srv.process.wait(timeout=120)

    outcomes = Counter(outcome for _, _, outcome in results)
    in_flight_finished = sum(1 for start, end, o in results if o == "ok" and start < sent_at[0] < end)
    assert busy.is_set()
    assert srv.process.returncode == 0
    assert not [o for o in outcomes if o.startswith("lost")], outcomes
    assert in_flight_finished > 0, outcomes
    assert outcomes["ok"] > 0, outcomes
    assert outcomes["refused"] > 0, outcomes


def test_ctrl_c_while_the_model_loads_stops_in_seconds_and_probes_answer(default_model, tmp_path):
    """The runner loads the model off its event loop: probes answer while it loads, and a stop
    does not wait for the load (it used to take 74 to 84 s in the first ~100 s after start)."""
    srv = start_server(str(default_model.tag), tmp_path / "serve.log", wait_ready=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the API worker is up...
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(srv.url + "/livez", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        probe = httpx.get(srv.url + "/readyz", timeout=5)  # ...and answers readiness at once
        assert probe.status_code == 503, "the model loaded before the test could interrupt it"
        os.killpg(srv.process.pid, signal.SIGINT)  # Ctrl-C: the whole process group
        interrupted = time.monotonic()
        srv.process.wait(timeout=60)
        while time.monotonic() - interrupted < 60:
            try:
                os.killpg(srv.process.pid, 0)
            except ProcessLookupError:
                break  # every process of the group has exited
            time.sleep(0.1)
        stopped_after = time.monotonic() - interrupted
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(srv.process.pid, signal.SIGKILL)
    assert stopped_after < 10, f"stopped {stopped_after:.1f} s after Ctrl-C:\n{srv.log.read_text()[-2000:]}"

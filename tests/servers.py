"""Real `bentoml serve` processes for the tests: start one on a free port, wait until ready, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    log_when_ready: str = ""  # what the server had logged when /readyz first answered 200

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    tag: str,
    log: Path,
    *,
    wait_ready: bool = True,
    python: str = sys.executable,
    target: str = "service:PyramidNetClassifier",
    cwd: Path = REPO,
    retried: bool = False,
    **settings: str,
) -> Server:
    """`bentoml serve target` on a free port with PYRAMIDNET_* settings, in a process group of its
    own (as a shell runs it); returns once /readyz answers 200, or at once with wait_ready=False.
    `python` and `target` serve a built bento from another environment; a start that lost a port
    race is retried once (`retried`)."""
    port = free_port()
    # Its own BENTOML_HOME sharing the test model store: `bentoml serve` wipes the Prometheus
    # directory under its home on start, which would blank the metrics of a server beside it.
    home = log.parent / f"bentoml-home-{port}"
    home.mkdir()
    for shared in ("models", "bentos"):
        (Path(os.environ["BENTOML_HOME"]) / shared).mkdir(exist_ok=True)
        (home / shared).symlink_to(Path(os.environ["BENTOML_HOME"]) / shared)
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "PYRAMIDNET_MODEL": tag,
        **{f"PYRAMIDNET_{k.upper()}": v for k, v in settings.items()},
    }
    cmd = [python, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    if not wait_ready:
        return server
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            if "Address already in use" in text and not retried:
                # BentoML picks its internal (circus, runner) ports free and binds them later; on
                # a busy machine another process can take one in between. A new start picks anew.
                return start_server(tag, log, python=python, target=target, cwd=cwd, retried=True, **settings)
            raise RuntimeError(f"server exited with {process.returncode}:\n{text[-3000:]}")
        if server.is_ready():
            server.log_when_ready = log.read_text()
            return server
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()

"""The front door cannot rot: the commands and client code that README and the API reference
show are run against a real server, and the outputs they claim are checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..checkpoints import shipped_as_pth

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "api.md"]
SKIP = ("make ", "-m bench.", "apt-get ", "locust ", "<key>", "containerize", "kubectl")  # CI runs make; benchmarks and
# load tests are not tests (test_load_tools.py runs the Locust file); containerize needs Docker and
# kubectl a cluster (docs/deployment.md: the opt-in container test)


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path, sample_jpegs) -> Path:
    """A stand-in for /tmp/test (a few CIFAR-10 test images) and a checkpoint to register."""
    images = tmp_path / "test"
    for src in sample_jpegs[:20]:
        (images / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, images / src.parent.name / src.name)
    shipped_as_pth(tmp_path / "best_pyramidnet_model.pth", epoch=187, best_val_acc=94.12)
    return tmp_path


def localize(text: str, server_url: str, workdir: Path) -> str:
    return (
        text.replace("http://127.0.0.1:3000", server_url)
        .replace("/tmp/test", str(workdir / "test"))
        .replace("samples/", f"{REPO}/samples/")
        .replace("classify_dir.py samples ", f"classify_dir.py {REPO}/samples ")
        .replace(".venv/bin/python scripts/", f"{sys.executable} {REPO}/scripts/")
    )


def shell_commands() -> list[tuple[str, str]]:
    """Each command line of the bash blocks, but README's deployment blocks (`<!-- deploy: ... -->`),
    which run whole, as scripts: test_deploy.py renders the cluster block and the opt-in container test
    runs the image block."""
    out = []
    for doc in DOCS:
        marked = re.findall(r"(<!-- deploy: [^>]*-->\n)?```bash\n(.*?)```", doc.read_text(), flags=re.S)
        for block in [block for marker, block in marked if not marker]:
            for line in block.splitlines():
                command = line.split("  #")[0].strip()
                if command and not command.startswith("#") and not any(s in command for s in SKIP):
                    out.append((doc.name, command))
    return out


@pytest.mark.parametrize(("doc", "command"), shell_commands(), ids=lambda v: v[:60] if isinstance(v, str) else v)
def test_shell_commands_in_the_docs_work(server, workdir, doc, command):
    result = subprocess.run(
        localize(command, server.url, workdir), shell=True, cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert result.returncode in (0, 1) if "classify_dir" in command else result.returncode == 0, result.stderr
    if "%{http_code}" in command:  # a probe's status
        assert result.stdout.strip() == "200"
    elif "| grep" in command:  # a metric, found
        assert result.stdout.strip()
    elif command.startswith("curl"):
        body = json.loads(result.stdout)
        bad_input = "/etc/hostname" in command or "resnet50" in command  # the examples of error answers
        assert ("error" in body) == bad_input, result.stdout
    if "save_model" in command:
        assert "94.12" in result.stdout
        assert "1,772,706" in result.stdout


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_python_examples_print_what_the_docs_say(server, workdir, doc):
    for code in blocks(doc, "python"):
        expected = [m[1].strip() for m in re.finditer(r"^\s*print\(.*\)\s*#\s*(.*)$", code, flags=re.M)]
        prints = re.findall(r"^\s*print\(.*$", code, flags=re.M)
        result = subprocess.run(
            [sys.executable, "-c", localize(code, server.url, workdir)], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        printed = result.stdout.splitlines()
        assert len(printed) == len(prints)
        for line, out in zip(prints, printed, strict=True):
            if "#" in line:
                assert out == line.split("#", 1)[1].strip(), f"{doc.name}: {line.strip()} printed {out!r}"
        assert expected  # every example shows at least one output


def test_the_docs_page_renders_in_chromium_with_no_request_leaving_the_server(server, tmp_path):
    """Debian's Chromium, headless, loads / as a visitor would: Swagger UI draws every route, the
    Open Inference Protocol's included, and every request the page makes goes to the server itself."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from model_store import __version__
    from model_store.edge.docs import TITLE

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.on("request", lambda request: requested.append(request.url))
        page.goto(server.url + "/", wait_until="networkidle")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        title = page.locator(".info .title").inner_text()
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        page.screenshot(path=tmp_path / "docs.png", full_page=True)
        browser.close()
    assert title.startswith(TITLE)
    assert __version__ in title
    assert {"/classify", "/classify_json", "/v2/health/ready", "/v2/models/pyramidnet-cifar10/infer"} <= {
        o.replace("\u200b", "") for o in operations
    }
    assert requested
    assert [url for url in requested if not url.startswith(server.url)] == []
    shot = Image.open(tmp_path / "docs.png").convert("RGB")
    assert shot.width == 1280
    assert shot.height > 1600  # the whole document, not a blank or an error page
    assert len(shot.getcolors(maxcolors=1 << 20)) > 100  # text, buttons and colours, drawn


def test_the_documents_examples_are_what_the_server_answers(server):
    """The OpenAPI document's example answers are the served default's for its example bodies (to the
    rounding the examples print, and the precision this CPU runs)."""
    from model_store.edge.examples import EXAMPLES

    document = httpx.get(server.url + "/docs.json", timeout=30).json()
    assert document["components"]["schemas"]["Prediction"]["example"] == EXAMPLES["Prediction"]
    answered = httpx.post(server.url + "/classify_json", json=EXAMPLES["ImagesRequest"], timeout=60).json()
    (got,), (expected,) = answered["predictions"], EXAMPLES["Predictions"]["predictions"]
    assert (got["label"], got["model"]) == (expected["label"], expected["model"])
    for label, p in expected["probabilities"].items():
        assert abs(got["probabilities"][label] - p) < 0.01, label
    infer = httpx.post(
        server.url + "/v2/models/pyramidnet-cifar10/infer", json=EXAMPLES["InferenceRequest"], timeout=60
    )
    top = [entry.split(":", 1)[1] for entry in infer.json()["outputs"][0]["data"]]
    assert top == [entry.split(":", 1)[1] for entry in EXAMPLES["InferenceResponse"]["outputs"][0]["data"]]
    info = httpx.post(server.url + "/model_info", timeout=30).json()
    assert {k: info[k] for k in ("tag", "classes", "preprocessing", "parameters", "limits")} == {
        k: EXAMPLES["ModelInfo"][k] for k in ("tag", "classes", "preprocessing", "parameters", "limits")
    }

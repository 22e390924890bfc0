"""Load test with Locust: one task per endpoint, on real CIFAR-10 test images.

    locust -f locustfile.py --headless --host http://127.0.0.1:3000 -u 32 -r 8 -t 60s --csv results/locust

Options (after the Locust ones): --cifar10 (test-jpeg.tar.gz or a folder of JPEGs; default
../shared/data/cifar10/test-jpeg.tar.gz), --classify-weight 3, --batch-weight 1, --batch-size 16,
--api-key (or PYRAMIDNET_API_KEY). A 503 OVERLOADED answer is counted as a failure: it is load
the service shed, and its Retry-After is honoured before that user's next request.
"""

from __future__ import annotations

import os
import random
import tarfile
import time
from pathlib import Path

from locust import HttpUser, between, events

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "shared" / "data" / "cifar10" / "test-jpeg.tar.gz"
IMAGES: list[bytes] = []


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--cifar10", default=str(DEFAULT_DATA), help="test-jpeg.tar.gz or a folder of JPEGs")
    parser.add_argument("--classify-weight", type=int, default=3, help="weight of the /classify task")
    parser.add_argument("--batch-weight", type=int, default=1, help="weight of the /classify_batch task")
    parser.add_argument("--batch-size", type=int, default=16, help="images per /classify_batch request")
    parser.add_argument("--api-key", default=os.environ.get("PYRAMIDNET_API_KEY", ""), help="Bearer key, if set")


@events.init.add_listener
def _load(environment, **_) -> None:
    opts = environment.parsed_options
    source = Path(opts.cifar10)
    if source.is_dir():
        IMAGES.extend(p.read_bytes() for p in sorted(source.rglob("*.jpg"))[:2000])
    else:
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".jpg")][:2000]
            IMAGES.extend(tar.extractfile(m).read() for m in members)
    if not IMAGES:
        raise SystemExit(f"no JPEGs found in {source}")
    # Locust keeps task weights as repetitions in a list.
    CifarUser.tasks = [CifarUser.classify] * opts.classify_weight + [CifarUser.classify_batch] * opts.batch_weight


class CifarUser(HttpUser):
    wait_time = between(0, 0)  # closed loop: the next request as soon as the last is answered

    def on_start(self) -> None:
        key = self.environment.parsed_options.api_key
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    def classify(self) -> None:
        self._post("/classify", [("image", ("image.jpg", random.choice(IMAGES), "image/jpeg"))])

    def classify_batch(self) -> None:
        n = self.environment.parsed_options.batch_size
        self._post(
            "/classify_batch",
            [("images", (f"{i}.jpg", img, "image/jpeg")) for i, img in enumerate(random.sample(IMAGES, n))],
        )

    def _post(self, path: str, files: list) -> None:
        with self.client.post(path, files=files, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
                return
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "no error body"
            response.failure(f"{response.status_code} {code}")
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("Retry-After", 1)))

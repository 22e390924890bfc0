"""Load test with Locust: one task per endpoint, on real CIFAR-10 test images.

    locust -f locustfile.py --headless --host http://127.0.0.1:3000 -u 32 -r 8 -t 60s --csv results/locust

Options (after the Locust ones): --cifar10 (test-jpeg.tar.gz or a folder of JPEGs, searched
recursively; default samples/, one CIFAR-10 test image of each class), --classify-weight 3,
--batch-weight 1, --batch-size 16, --api-key (or PYRAMIDNET_API_KEY), --max-attempts 4.

Each user behaves as a well-mannered client: a request shed with 503 OVERLOADED is retried, after
the Retry-After the answer names, up to --max-attempts times. A shed attempt is not a failure: it
is reported on its own row (type SHED), apart from the answers (type POST). Failures are every
other answer that is not a 200: a 5xx without a code, MODEL_UNAVAILABLE, a 4xx. How to read the
result: README.md#load-test.
"""

from __future__ import annotations

import os
import random
import tarfile
import time
from pathlib import Path

from locust import HttpUser, between, events

DEFAULT_DATA = Path(__file__).resolve().parent / "samples"
IMAGES: list[bytes] = []


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--cifar10", default=str(DEFAULT_DATA), help="test-jpeg.tar.gz or a folder of JPEGs")
    parser.add_argument("--classify-weight", type=int, default=3, help="weight of the /classify task")
    parser.add_argument("--batch-weight", type=int, default=1, help="weight of the /classify_batch task")
    parser.add_argument("--batch-size", type=int, default=16, help="images per /classify_batch request")
    parser.add_argument("--api-key", default=os.environ.get("PYRAMIDNET_API_KEY", ""), help="Bearer key, if set")
    parser.add_argument("--max-attempts", type=int, default=4, help="tries of a request the service sheds")


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
            # Drawn with replacement: a batch may be larger than the images at hand (samples/ has ten).
            [("images", (f"{i}.jpg", img, "image/jpeg")) for i, img in enumerate(random.choices(IMAGES, k=n))],
        )

    def _post(self, path: str, files: list) -> None:
        for _ in range(self.environment.parsed_options.max_attempts):
            retry_after = self._attempt(path, files)
            if retry_after is None:
                return
            time.sleep(retry_after)  # gevent's sleep under Locust: other users run meanwhile

    def _attempt(self, path: str, files: list) -> float | None:
        """One try; the seconds to wait before the next if the service shed it, else None."""
        with self.client.post(path, files=files, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
                return None
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "no error code"
            if response.status_code == 503 and code == "OVERLOADED":
                response.request_meta["request_type"] = "SHED"  # its own row; not a failure
                response.success()
                return float(response.headers.get("Retry-After", 1))
            response.failure(f"{response.status_code} {code}")
            return None

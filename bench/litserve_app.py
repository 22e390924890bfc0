"""LitServe serving the same weights: the peer the service is compared with (eager PyTorch, batches of up to 64).

    PYRAMIDNET_MODEL=pyramidnet-cifar10:latest python -m bench.litserve_app --port 3200

LitServe as its documentation sets it up for an image classifier: one inference worker running the
eager PyTorch network in fp32, dynamic batching up to 64 images with a 10 ms window, the API
server in its own process. Same checkpoint (the model store tag in PYRAMIDNET_MODEL), same
preprocessing and the same answer shape as the service's `/classify`, and `/readyz` for the
benchmarks' readiness wait. Needs `pip install litserve` (bench only; not a project dependency).
"""

from __future__ import annotations

import argparse
import io
import os

import litserve as ls
from PIL import Image

from model_store import DEFAULT_MODEL_NAME, load_classifier, preprocess_batch


class PyramidNetAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        tag = os.environ.get("PYRAMIDNET_MODEL", f"{DEFAULT_MODEL_NAME}:latest")
        self.model = load_classifier(tag, device, "eager", "fp32")

    def decode_request(self, request) -> Image.Image:
        return Image.open(io.BytesIO(request["image"].file.read()))

    def batch(self, images: list[Image.Image]):
        return preprocess_batch(images, self.model.spec)

    def predict(self, batch):
        return self.model.predict_proba(batch)

    def unbatch(self, probabilities) -> list:
        return list(probabilities)

    def encode_response(self, p) -> dict:
        classes = self.model.spec.classes
        return {"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist(), strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3200)
    args = parser.parse_args()
    api = PyramidNetAPI(max_batch_size=64, batch_timeout=0.01, api_path="/classify")
    server = ls.LitServer(api, accelerator="cpu", healthcheck_path="/readyz")
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()

"""Throughput of one image per request by the way it is sent: multipart, a raw image body, base64
JSON, and the Open Inference Protocol's BYTES and FP32 inputs (in JSON and in binary data).

    python -m bench.input_kinds                        # 32 clients, 20 s per kind, 2 rounds: about 6 minutes
    python -m bench.input_kinds --clients 8 --seconds 10 --rounds 1

One fresh `bentoml serve` of the registered default with the shipped settings; for each kind in
turn, `--rounds` times (alternating, so that the machine's drift hits each alike), 3 s of warm-up
then `--clients` closed-loop `hey` clients for `--seconds`, every request carrying the same real
CIFAR-10 test JPEG (or its preprocessed pixels, for FP32). Prints img/s, latency percentiles and
each kind's throughput relative to multipart's. A figure, not a test.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
from pathlib import Path

from model_store import DEFAULT_MODEL_NAME, Settings, decode_image, get_model, preprocess_batch, read_spec
from model_store.oip import HEADER_LENGTH

from .harness import command, free_port, serving
from .hey import BOUNDARY, DATA_HELP, hey, jpeg_archive, load_images, multipart, summarise


def bodies(image: bytes, model: str) -> dict[str, tuple[str, bytes, str, dict[str, str]]]:
    """{kind: (route, body, content type, headers)} of one image."""
    served = get_model(model)
    spec, settings = read_spec(served), Settings()
    infer = f"/v2/models/{served.tag.name}/infer"
    pixels = preprocess_batch(
        [decode_image(image, max_pixels=settings.max_image_pixels, formats=settings.allowed_formats)], spec
    )
    encoded = base64.b64encode(image).decode()

    def oip_json(tensor: dict) -> bytes:
        return json.dumps({"inputs": [tensor]}).encode()

    def oip_binary(tensor: dict, raw: bytes) -> tuple[str, bytes, str, dict[str, str]]:
        header = oip_json({**tensor, "parameters": {"binary_data_size": len(raw)}})
        return infer, header + raw, "application/octet-stream", {HEADER_LENGTH: str(len(header))}

    images = {"name": "images", "shape": [1], "datatype": "BYTES"}
    fp32 = {"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32"}
    return {
        "multipart": ("/classify", multipart("image", [image]), f"multipart/form-data; boundary={BOUNDARY}", {}),
        "raw body": ("/classify", image, "image/jpeg", {}),
        "base64 JSON": ("/classify_json", json.dumps({"images": [encoded]}).encode(), "application/json", {}),
        "OIP BYTES json": (infer, oip_json({**images, "data": [encoded]}), "application/json", {}),
        "OIP BYTES binary": oip_binary(images, len(image).to_bytes(4, "little") + image),
        "OIP FP32 json": (infer, oip_json({**fp32, "data": pixels.ravel().tolist()}), "application/json", {}),
        "OIP FP32 binary": oip_binary(fp32, pixels.astype("<f4").tobytes()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest", help="model store tag to serve")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    args = parser.parse_args()
    kinds = bodies(load_images(jpeg_archive(args.data), limit=1)[0], args.model)
    measured: dict[str, list[dict]] = {kind: [] for kind in kinds}
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as scratch,
        serving(command("service", port), port, {"PYRAMIDNET_MODEL": args.model}, Path(scratch) / "serve.log") as (
            url,
            _,
        ),
    ):
        for _ in range(args.rounds):
            for kind, (route, body, content_type, headers) in kinds.items():
                path = Path(scratch) / "body"
                path.write_bytes(body)
                send = {"content_type": content_type, "headers": headers}
                hey(url + route, path, args.clients, duration=3, **send)
                results = hey(url + route, path, args.clients, duration=args.seconds, **send)
                measured[kind].append(summarise(results, args.seconds, 1))
    baseline = statistics.mean(r["images_per_s"] for r in measured["multipart"])
    print(f"{args.clients} clients, {args.seconds:g} s x {args.rounds} rounds, one image per request")
    print(f"{'kind':<18}{'bytes':>8}{'img/s':>8}{'x multipart':>12}{'p50 ms':>8}{'p99 ms':>8}  codes")
    for kind, rounds in measured.items():
        rate = statistics.mean(r["images_per_s"] for r in rounds)
        p50 = statistics.mean(r["p50_ms"] for r in rounds)
        p99 = statistics.mean(r["p99_ms"] for r in rounds)
        codes: dict[int, int] = {}
        for r in rounds:
            for code, n in r["codes"].items():
                codes[code] = codes.get(code, 0) + n
        print(
            f"{kind:<18}{len(kinds[kind][1]):>8}{rate:>8.1f}{rate / baseline:>12.2f}{p50:>8.0f}{p99:>8.0f}  "
            + ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()))
        )


if __name__ == "__main__":
    main()

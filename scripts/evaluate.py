"""Evaluate a model on a folder of labelled images, offline and (optionally) through the service.

    python scripts/evaluate.py --images /tmp/test --model pyramidnet-cifar10:latest --out-dir reports
    python scripts/evaluate.py --images /tmp/test --checkpoint best_pyramidnet_model.pth
    python scripts/evaluate.py --images /tmp/test --model pyramidnet-cifar10:latest --url http://127.0.0.1:3000
    python scripts/evaluate.py --images /tmp/test --url http://127.0.0.1:3000 --out-dir docs/model-card --card README.md

The folder holds <class>/*.jpg (the class is the folder name, CIFAR-10 names). Offline, the images
go through the same decode and preprocessing as the service. Reports top-1 and per-class accuracy
and the expected calibration error; writes confusion.png, reliability.png and report.json. With
--url the same images are classified over HTTP with the generated client and both accuracies,
their agreement and the largest probability difference are reported. --card FILE rewrites FILE's
model card (the lines between CARD_BEGIN and CARD_END) from this evaluation and the weights' facts;
--precisions adds the table `python -m bench.precisions --out FILE` wrote (each CPU precision's
top-1, agreement with fp32, offline and served speed) to it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import sys
from pathlib import Path

try:  # the plots: a dev tool's (`make serve` leaves matplotlib out), so one line rather than a traceback
    import matplotlib
except ModuleNotFoundError:
    sys.exit("evaluate.py draws its plots with matplotlib, which this install leaves out: run pip install -e '.[dev]'")

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from model_store import Classifier, ModelSpec, cifar10, load_classifier
from model_store.evaluation import labelled_images, probabilities
from model_store.extras import torch_required

ECE_BINS = 15
CARD_BEGIN = "<!-- model card: written by scripts/evaluate.py --card; edit there, not here -->"
CARD_END = "<!-- end of model card -->"
FACTS = [  # (row, metadata key): what scripts/ship_weights.py recorded about the weights
    ("weights", "source"),
    ("sha256", "source_sha256"),
    ("final weights or their EMA (by hold-out top-1)", "weights"),
    ("epochs", "epochs"),
    ("training command", "training_command"),
    ("training wall time (h, any pauses included)", "train_wall_time_h"),
    ("training images/s", "train_images_per_s"),
    ("hardware", "hardware"),
    ("data", "data"),
    ("hold-out top-1 (%)", "holdout_top1"),
    ("top-1 on the 1,017 exact test images (%)", "test_top1_exact"),
    ("top-1 on the JPEGs of those 1,017 (%)", "test_top1_exact_as_jpeg"),
]


def classifier_from_checkpoint(path: Path, device: str) -> Classifier:
    with torch_required("evaluate.py --checkpoint"):  # lazy: reading a .pth needs torch, --model does not
        from model_store.architecture import build_network
        from model_store.backends import torch_classifier
        from model_store.pth import read_checkpoint

    checkpoint = read_checkpoint(path)
    spec = ModelSpec()
    module = build_network(spec, checkpoint.state_dict)
    metadata = {"epoch": checkpoint.epoch, "best_val_acc": checkpoint.best_val_acc}
    return torch_classifier(module, spec, tag=str(path), metadata=metadata, device=device)


def served_probabilities(url: str, paths: list[Path], classes: tuple[str, ...]) -> np.ndarray:
    import bentoml

    out = []
    with bentoml.SyncHTTPClient(url, timeout=300) as client:
        for i in tqdm(range(0, len(paths), 32), desc="service", unit="batch"):
            results = client.classify_batch(images=paths[i : i + 32])
            out += [[r["probabilities"][c] for c in classes] for r in results]
    return np.asarray(out)


def calibration(probs: np.ndarray, labels: np.ndarray) -> tuple[float, list[dict]]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, ECE_BINS + 1)
    bins, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            accuracy, mean_conf = correct[members].mean(), confidence[members].mean()
            ece += members.mean() * abs(accuracy - mean_conf)
            bins.append(
                {
                    "low": lo,
                    "high": hi,
                    "count": int(members.sum()),
                    "accuracy": float(accuracy),
                    "confidence": float(mean_conf),
                }
            )
    return float(ece), bins


def plot_confusion(matrix: np.ndarray, classes: tuple[str, ...], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if shown[row, col] > 0.5 else "black",
        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(bins: list[dict], ece: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(centers, [b["accuracy"] for b in bins], width=1 / ECE_BINS, alpha=0.7, edgecolor="black", label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C3", label="per bin")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability (ECE {ece * 100:.2f} %)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def card(report: dict, metadata: dict, classes: tuple[str, ...], figures: Path, home: Path) -> str:
    """The model card in Markdown: the weights' facts, top-1 overall and per class, calibration,
    offline against served, and the limits the evaluation shows. Figures are linked from `home`."""
    matrix = np.array(report["confusion"])
    rows = [f"| {name} | {str(metadata[key]).replace('|', '/')} |" for name, key in FACTS if key in metadata]
    folder = Path(report["folder"]).name
    lines = [
        f"Model `{report['model']}`, evaluated on {report['images']:,} labelled images (`{folder}/<class>/`) "
        f"on {datetime.date.today()}.",
        "",
        "| | |",
        "|---|---|",
        *rows,
        f"| top-1, offline (%) | **{report['top1']:.2f}** ({report['runs_as']}) |",
        f"| expected calibration error (%) | {report['ece'] * 100:.2f} ({ECE_BINS} bins) |",
    ]
    if service := report.get("service"):
        lines += [
            f"| top-1, served (%) | **{service['top1']:.2f}** (`/classify_batch`, generated client) |",
            f"| served vs offline | top-1 agreement {service['top1_agreement']:.2f} %, largest probability "
            f"difference {service['max_abs_probability_difference']:.2g} |",
        ]
    lines += ["", "| class | top-1 (%) | most often taken for |", "|---|---|---|"]
    for i, name in enumerate(classes):
        errors = matrix[i].copy()
        errors[i] = 0
        worst = int(errors.argmax())
        taken_for = f"{classes[worst]} ({errors[worst]} of {matrix[i].sum()})" if errors[worst] else "-"
        lines.append(f"| {name} | {report['per_class'][name]:.2f} | {taken_for} |")
    if record := report.get("precisions"):
        lines += precision_table(record)
    link = Path(os.path.relpath(figures, home))
    lines += [
        "",
        f"![confusion matrix]({link / 'confusion.png'})",
        f"![reliability diagram]({link / 'reliability.png'})",
        "",
    ]
    confusions = matrix + matrix.T
    np.fill_diagonal(confusions, 0)
    a, b = np.unravel_index(confusions.argmax(), confusions.shape)
    weakest = min(report["per_class"], key=report["per_class"].get)
    lines += [
        "Known limits:",
        "",
        f"- The weakest class is {weakest} ({report['per_class'][weakest]:.2f} %); the pair most often "
        f"confused is {classes[a]} and {classes[b]} ({confusions[a, b]} of {report['images']:,} images).",
        "- It knows only the ten CIFAR-10 classes: any other picture is given one of them, often with high "
        "confidence. There is no 'none of these' answer.",
        "- It was trained and measured on 32x32 images. Larger images are resized to 32x32 first; accuracy on "
        "them, and on photographs unlike CIFAR-10's, was not measured.",
        "- The CIFAR-10 test JPEGs are lossy copies of the originals (mean absolute pixel error about 5.8/255); "
        "figures on pixel-exact images and on their JPEGs, where the weights record them, are in the table above.",
    ]
    return "\n".join(lines)


def precision_table(record: dict) -> list[str]:
    """bench.precisions' record as the card's table of CPU precisions."""
    lines = [
        "",
        f"On the CPU (OpenVINO; `python -m bench.precisions`, {record['precisions']['fp32']['images']:,} test "
        f"JPEGs, 32 clients on `/classify`, 2 cores), the default is the fastest served precision within 0.1 pp "
        f"of fp32's top-1: **{record['default_by_rule']}**.",
        "",
        "| precision | top-1 (%) | agreement with fp32 (%) | largest probability difference | offline img/s | "
        "served img/s | served p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in record["precisions"].items():
        lines.append(
            f"| {name} | {r['top1']:.2f} | {r['agreement_with_fp32']:.2f} | {r['max_abs_dp_vs_fp32']:.2g} | "
            f"{r['offline_images_per_s']:.0f} | {r['served_images_per_s']:.0f} | {r['served_p99_ms']:.0f} |"
        )
    return lines


def write_card(path: Path, text: str) -> None:
    """Replace what lies between CARD_BEGIN and CARD_END in `path`, atomically."""
    before, rest = path.read_text().split(CARD_BEGIN, 1)
    after = rest.split(CARD_END, 1)[1]
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(f"{before}{CARD_BEGIN}\n{text}\n{CARD_END}{after}")
    scratch.replace(path)


def images_folder(images: Path) -> Path:
    """--images: a folder of <class>/*.jpg as it is, else CIFAR-10's test images from any form
    model_store.cifar10 reads (the official binary version unpacked once under .data/)."""
    if images.is_dir() and any((images / name).is_dir() for name in ModelSpec().classes):
        return images
    return cifar10.unpacked_test_split(images, Path(__file__).resolve().parents[1] / cifar10.CACHE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images",
        type=Path,
        required=True,
        help="folder of <class>/*.jpg, or CIFAR-10's test images: the official binary version or this project's layout",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="pyramidnet-cifar10:latest", help="model store tag")
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint instead of a stored model")
    parser.add_argument("--url", help="also classify through the service at this URL")
    parser.add_argument("--out-dir", type=Path, default=Path("reports"))
    parser.add_argument("--limit-per-class", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="as PYRAMIDNET_PRECISION; match the service's with --url")
    parser.add_argument("--precisions", type=Path, metavar="JSON", help="bench.precisions' record, for the card")
    parser.add_argument("--card", type=Path, metavar="FILE", help="rewrite FILE's model card from this evaluation")
    args = parser.parse_args(argv)
    if args.card and not all(marker in args.card.read_text() for marker in (CARD_BEGIN, CARD_END)):
        parser.error(f"{args.card} has no model card markers: {CARD_BEGIN} ... {CARD_END}")

    model = (
        classifier_from_checkpoint(args.checkpoint, args.device)
        if args.checkpoint
        else load_classifier(args.model, args.device, precision=args.precision)
    )
    paths, labels = labelled_images(images_folder(args.images), model.spec.classes, args.limit_per_class)
    offline = probabilities(model, paths)
    predicted = offline.argmax(1)
    classes = model.spec.classes
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    ece, bins = calibration(offline, labels)
    report = {
        "model": model.tag,
        "images": len(paths),
        "folder": str(args.images),
        "top1": float((predicted == labels).mean() * 100),
        "per_class": {c: float(matrix[i, i] / max(matrix[i].sum(), 1) * 100) for i, c in enumerate(classes)},
        "ece": ece,
        "confusion": matrix.tolist(),
        "reliability": bins,
        "runs_as": f"{model.backend} {model.precision} on {model.device}",
    }
    if args.precisions:
        report["precisions"] = json.loads(args.precisions.read_text())
    if args.url:
        served = served_probabilities(args.url, paths, classes)
        report["service"] = {
            "url": args.url,
            "top1": float((served.argmax(1) == labels).mean() * 100),
            "top1_agreement": float((served.argmax(1) == predicted).mean() * 100),
            "max_abs_probability_difference": float(np.abs(served - offline).max()),
        }

    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion(matrix, classes, args.out_dir / "confusion.png", f"{model.tag}: top-1 {report['top1']:.2f} %")
    plot_reliability(bins, ece, args.out_dir / "reliability.png")
    (args.out_dir / "report.json").write_text(json.dumps(report, indent=2))

    print(f"model     {model.tag}")
    print(f"images    {len(paths)} from {args.images}")
    print(f"top-1     {report['top1']:.2f} %   (ECE {ece * 100:.2f} %)")
    for c, acc in report["per_class"].items():
        print(f"  {c:<12} {acc:6.2f} %")
    if args.url:
        s = report["service"]
        print(
            f"service   top-1 {s['top1']:.2f} %, agreement {s['top1_agreement']:.2f} %, "
            f"max |delta p| {s['max_abs_probability_difference']:.3g}"
        )
    print(f"wrote     {args.out_dir}/confusion.png, reliability.png, report.json", file=sys.stderr)
    if args.card:
        write_card(args.card, card(report, model.metadata, classes, args.out_dir, args.card.parent))
        print(f"wrote     the model card in {args.card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

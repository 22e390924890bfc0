"""CIFAR-10's official binary version, read without pickle into this project's layout: a binary
archive made here from the pixel-exact test images comes back with the same pixels and labels."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store import CIFAR10_CLASSES, cifar10
from model_store.cifar10 import BATCHES, EXACT, is_layout, layout, read_batch, unpacked_test_split

from ..binary_cifar10 import records, write_archive


def binary_archive(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """All the images as the test batch, and each training batch a different slice of them."""
    batches = {"test_batch.bin": records(images, labels)}
    for i, name in enumerate(BATCHES["train"]):
        batches[name] = records(images[i * 100 : (i + 1) * 100], labels[i * 100 : (i + 1) * 100])
    return write_archive(path, batches)


def test_the_binary_version_becomes_the_layout_with_its_pixels_and_labels(exact_images, tmp_path):
    images, labels = exact_images
    archive = binary_archive(tmp_path / "cifar-10-binary.tar.gz", images, labels)
    made = layout(archive, tmp_path / "cache")
    assert is_layout(made)
    exact = np.load(made / EXACT)
    assert np.array_equal(exact["images"], images)
    assert np.array_equal(exact["labels"], labels)
    with tarfile.open(made / "test-jpeg.tar.gz") as tar:
        jpegs = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert len(jpegs) == len(images)
    for label, name in enumerate(CIFAR10_CLASSES):  # NNNN counts the images of each class in order
        ours = np.flatnonzero(labels == label)
        assert sorted(n for n in jpegs if n.startswith(f"test/{name}/")) == [
            f"test/{name}/{k:04d}.jpg" for k in range(len(ours))
        ]
        decoded = np.asarray(Image.open(io.BytesIO(jpegs[f"test/{name}/0000.jpg"])).convert("RGB"), dtype=int)
        assert np.abs(decoded - images[ours[0]]).mean() < 8  # a JPEG of that image (quality 75), not another
    with tarfile.open(made / "train-jpeg.tar.gz") as tar:
        assert len([m for m in tar if m.isfile()]) == 500
    # Made once: asked again, the same folder, not written again.
    stamp = (made / EXACT).stat().st_mtime_ns
    assert layout(archive, tmp_path / "cache") == made
    assert (made / EXACT).stat().st_mtime_ns == stamp
    # The unpacked download reads the same.
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    again = layout(tmp_path / "unpacked", tmp_path / "cache-2")
    assert np.array_equal(np.load(again / EXACT)["images"], images)
    assert sorted(p.name for p in unpacked_test_split(archive, tmp_path / "cache").iterdir()) == sorted(CIFAR10_CLASSES)


def test_a_layout_another_process_published_first_is_kept_as_it_is(exact_images, tmp_path, monkeypatch):
    """Two processes (two test workers) making the same layout at once: the second to finish keeps the first's
    copy, which someone may be reading, and leaves no scratch behind."""
    images, labels = exact_images
    archive = binary_archive(tmp_path / "cifar-10-binary.tar.gz", images, labels)
    first = layout(archive, tmp_path / "cache")
    stamp = (first / EXACT).stat().st_mtime_ns
    # The second process looked before the first had published, and made its own.
    real, looks = cifar10.is_layout, []

    def looked_too_early(folder: Path) -> bool:
        looks.append(folder)
        return len(looks) > 1 and real(folder)

    monkeypatch.setattr(cifar10, "is_layout", looked_too_early)
    assert layout(archive, tmp_path / "cache") == first
    assert (first / EXACT).stat().st_mtime_ns == stamp
    assert len(looks) == 2  # the second look: whether what stands there is complete
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


def test_this_projects_layout_and_image_folders_are_read_as_they_are(tmp_path):
    (tmp_path / "test" / "cat").mkdir(parents=True)
    assert layout(tmp_path, tmp_path / "cache") == tmp_path.resolve()
    assert not (tmp_path / "cache").exists()


def test_what_is_not_the_binary_version_is_refused_and_nothing_is_left_behind(exact_images, tmp_path):
    images, labels = exact_images
    with pytest.raises(ValueError, match="not a whole number"):
        read_batch(records(images[:2], labels[:2])[:-1])
    with pytest.raises(ValueError, match="label 10"):
        read_batch(records(images[:1], np.array([10])))
    partial = write_archive(tmp_path / "partial.tar.gz", {"test_batch.bin": records(images[:3], labels[:3])})
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.bin"):
        layout(partial, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # read whole before anything is written

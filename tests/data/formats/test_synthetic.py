"""The embedded synthetic data set: deterministic, in FER2013's exact layout and imbalance, and label-dependent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data.formats.fer2013 import USAGES, read_fer2013_csv
from fer_lightning.data.formats.synthetic import (
    FER2013_TRAIN_COUNTS,
    SYNTHETIC_DEFAULTS,
    class_counts,
    ensure_synthetic_fer_csv,
    render_images,
    write_synthetic_fer_csv,
)

SMALL = {"num_train": 70, "num_val": 14, "num_test": 14}
HAPPY, SAD = 3, 4


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_fer_csv(tmp_path_factory.mktemp("synthetic") / "synthetic.csv", **SMALL, seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(small_csv: Path, tmp_path: Path) -> None:
    again = write_synthetic_fer_csv(tmp_path / "again.csv", **SMALL, seed=0)
    other = write_synthetic_fer_csv(tmp_path / "other.csv", **SMALL, seed=1)
    assert again.read_bytes() == small_csv.read_bytes()
    assert other.read_bytes() != small_csv.read_bytes()


def test_exact_fer2013_layout(small_csv: Path) -> None:
    lines = small_csv.read_text().splitlines()
    assert lines[0] == "emotion,pixels,Usage"
    assert len(lines) == 1 + sum(SMALL.values())
    usages = []
    for line in lines[1:]:
        emotion, pixels, usage = line.split(",")
        assert emotion.isdigit()
        assert 0 <= int(emotion) <= 6
        values = [int(v) for v in pixels.split(" ")]
        assert len(values) == 48 * 48
        assert min(values) >= 0
        assert max(values) <= 255
        usages.append(usage)
    # three contiguous blocks, in Kaggle's order, with the requested sizes
    blocks = [u for i, u in enumerate(usages) if i == 0 or usages[i - 1] != u]
    assert blocks == list(USAGES)
    assert [usages.count(u) for u in USAGES] == list(SMALL.values())
    arrays = read_fer2013_csv(small_csv)  # and the project's own reader accepts it
    assert arrays.images.shape == (98, 48, 48)


def test_class_proportions_follow_fer2013_in_every_split(small_csv: Path) -> None:
    arrays = read_fer2013_csv(small_csv)
    weights = np.asarray(FER2013_TRAIN_COUNTS) / sum(FER2013_TRAIN_COUNTS)
    for usage, total in zip(USAGES, SMALL.values()):
        counts = np.bincount(arrays.split(usage)[1], minlength=7)
        assert counts.sum() == total
        assert (counts >= 1).all(), f"{usage}: every class must appear, got {counts}"
        assert np.abs(counts - total * weights).max() < 1.0 + 1e-9  # largest remainder: within one row of quota


@pytest.mark.parametrize("total", [7, 14, 70, 800, 6000, 28709])
def test_class_counts_are_exact_and_near_quota(total: int) -> None:
    counts = class_counts(total)
    assert counts.sum() == total
    assert (counts >= 1).all()
    quota = total * np.asarray(FER2013_TRAIN_COUNTS) / sum(FER2013_TRAIN_COUNTS)
    assert np.abs(counts - quota).max() < 1.0 + 1e-9
    if total == 28709:
        assert counts.tolist() == list(FER2013_TRAIN_COUNTS)


def test_too_small_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 7 rows"):
        write_synthetic_fer_csv(tmp_path / "x.csv", num_train=6, num_val=7, num_test=7)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_ensure_reuses_a_matching_file_and_regenerates_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "data" / "synthetic.csv"
    assert ensure_synthetic_fer_csv(path, seed=0, **SMALL) == path
    first = path.read_bytes()
    past = path.stat().st_mtime_ns - 10_000_000_000  # backdate, so any rewrite shows in the mtime
    os.utime(path, ns=(past, past))
    ensure_synthetic_fer_csv(path, seed=0, **SMALL)
    assert path.stat().st_mtime_ns == past
    assert path.read_bytes() == first

    ensure_synthetic_fer_csv(path, seed=0, **{**SMALL, "num_test": 21})
    assert path.stat().st_mtime_ns != past
    assert len(path.read_text().splitlines()) == 1 + 70 + 14 + 21

    ensure_synthetic_fer_csv(path, seed=3, **{**SMALL, "num_test": 21})
    assert read_fer2013_csv(path).images.tobytes() != first  # another seed is another file
    assert sorted(p.name for p in path.parent.iterdir()) == ["synthetic.csv", "synthetic.csv.json"]


def test_ensure_regenerates_a_file_it_did_not_make(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.csv"
    path.write_text("emotion,pixels,Usage\n")  # same name, but not ours (no sidecar)
    ensure_synthetic_fer_csv(path, **SMALL)
    assert len(path.read_text().splitlines()) == 1 + sum(SMALL.values())


def test_ensure_rejects_unknown_sizes(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="num_tran"):
        ensure_synthetic_fer_csv(tmp_path / "x.csv", num_tran=10)
    assert set(SYNTHETIC_DEFAULTS) == {"num_train", "num_val", "num_test"}


def mouth_features(images: np.ndarray) -> np.ndarray:
    """The mouth region, each image standardised so that lighting and contrast do not count."""
    region = images[:, 26:44, 10:38].reshape(len(images), -1).astype(np.float64)
    region -= region.mean(axis=1, keepdims=True)
    return region / (region.std(axis=1, keepdims=True) + 1e-6)


def test_happy_and_sad_differ_in_the_mouth_region() -> None:
    """A linear read-out of the mouth pixels, fitted on one draw, tells Happy from Sad on another draw.

    Pose, lighting and noise jitter keep pixel means close, so a plain mean-image difference is a weak test; this
    one fails (about 50%) for a generator that draws the same faces whatever the label.
    """
    labels = np.repeat([HAPPY, SAD], 200)
    target = np.where(labels == HAPPY, 1.0, -1.0)
    fit = mouth_features(render_images(labels, np.random.default_rng(0)))
    held_out = mouth_features(render_images(labels, np.random.default_rng(1)))
    weights = np.linalg.solve(fit.T @ fit + 100.0 * np.eye(fit.shape[1]), fit.T @ target)  # ridge regression
    accuracy = float(((held_out @ weights > 0) == (target > 0)).mean())
    assert accuracy > 0.6, f"Happy vs Sad from the mouth region: {accuracy:.2f}, chance is 0.5"

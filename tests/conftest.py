"""Shared fixtures: small FER2013-format CSVs made by the tests, and the real configs composed for CPU."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import DictConfig, open_dict

from fer_lightning.config import compose
from tests.scripts import one_thread  # noqa: F401 (a fixture, shared by every test module)

REAL_FER2013 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"
FER2013_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE_DIRS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def write_fer_csv(path: Path, counts: dict[str, int], num_classes: int = 7, seed: int = 0) -> Path:
    """A FER2013-format CSV with random pixels; every class appears in every usage when counts allow."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, count in counts.items():
        for i in range(count):
            pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
            lines.append(f"{i % num_classes},{pixels},{usage}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_image_folder(csv_path: Path, root: Path, class_names: Sequence[str] = FER2013_ORDER) -> Path:
    """The images of a FER-format CSV as PNGs (lossless) in root/{train,val,test}/<class name>/: the same data in
    the image_folder format, whose classes are its folder names sorted (not FER2013's order)."""
    with csv_path.open() as file:
        for index, row in enumerate(csv.DictReader(file)):
            folder = root / USAGE_DIRS[row["Usage"]] / class_names[int(row["emotion"])]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
            assert cv2.imwrite(str(folder / f"{index:04d}.png"), pixels)
    return root


@pytest.fixture
def fer_csv(tmp_path: Path) -> Path:
    return write_fer_csv(tmp_path / "fer2013.csv", {"Training": 42, "PublicTest": 14, "PrivateTest": 14})


@pytest.fixture
def real_fer2013() -> Path:
    path = REAL_FER2013 / "fer2013.csv.gz"
    if not path.exists():
        pytest.skip(f"real FER2013 not found at {path}")
    return path


def compose_train(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose the real config as `train.py` would (the library's own `compose`), with outputs under tmp_path."""
    cfg = compose(config_name, overrides, output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg

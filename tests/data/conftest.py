"""Small generated image trees and FER+ vote files for the data tests, and one decode of the real FER2013."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

FER_FOLDER_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def write_images(
    folder: Path, count: int, size: int = 48, channels: int = 1, ext: str = ".png", prefix: str = "", seed: int = 0
) -> list[Path]:
    """`count` random images (gray, or color with distinct channels) written with OpenCV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape = (size, size) if channels == 1 else (size, size, channels)
        path = folder / f"{prefix}{i:04d}{ext}"
        assert cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(path)
    return paths


def write_kaggle_folders(root: Path, per_class: int = 3, prefixes: bool = True) -> Path:
    """Kaggle's FER2013 image edition: train/<emotion>/Training_*.jpg, test/<emotion>/{PublicTest,PrivateTest}_*."""
    for c, name in enumerate(FER_FOLDER_NAMES):
        train, test = ("Training_", "PublicTest_") if prefixes else ("", "")
        write_images(root / "train" / name, per_class * 2, prefix=train, seed=c)
        write_images(root / "test" / name, per_class, prefix=test, seed=10 + c)
        if prefixes:
            write_images(root / "test" / name, per_class, prefix="PrivateTest_", seed=20 + c)
    return root


def write_votes_csv(path: Path, votes: list[list[int]], usage: list[str]) -> Path:
    """A `fer2013new.csv`-format file: Usage,Image name, 8 emotions, unknown, NF."""
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    lines = [header]
    for i, (row, use) in enumerate(zip(votes, usage, strict=True)):
        name = f"fer{i:07d}.png" if row[-1] < 10 else ""
        lines.append(",".join([use, name, *map(str, row)]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory for every real-data test of the session: the real file is decoded once."""
    return tmp_path_factory.mktemp("real_cache")

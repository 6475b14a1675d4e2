"""Reader for Kaggle's FER2013 CSV (`emotion,pixels,Usage`), with a decoded uint8 cache.

Decoding 300 MB of text takes seconds; the decoded arrays are cached as `.npy` files keyed by the source
file's sha256, so a second run memory-maps them instead of parsing again.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_SIZE = 48
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLIT_OF_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
REQUIRED_COLUMNS = ("emotion", "pixels", "Usage")
CACHE_VERSION = 1  # bump when the decoded layout changes, so stale caches are not reused


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file, row and expectation."""


@dataclass
class FERArrays:
    """A decoded FER data set: images (N, H, W) uint8, labels (N,) int64, usage (N,) int8 index into USAGES."""

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray

    def split(self, usage: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.usage == USAGES.index(usage)
        return self.images[mask], self.labels[mask]


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV, transparently decompressing `.gz`."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def parse_pixels(text: str, where: str, size: int = FER2013_SIZE) -> np.ndarray:
    """Parse one `pixels` field into a (size, size) uint8 image, or raise naming `where`."""
    expected = size * size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when it stops at a non-numeric token
        try:
            values = np.fromstring(text, dtype=np.int32, sep=" ")
        except (ValueError, DeprecationWarning):
            message = f"{where}: pixels must be {expected} space-separated integers, got non-numeric text"
            raise DataFormatError(message) from None
    if values.size != expected:
        raise DataFormatError(f"{where}: expected {expected} pixels ({size}x{size}), got {values.size}")
    if values.min() < 0 or values.max() > 255:
        raise DataFormatError(f"{where}: pixel values must be in 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(size, size)


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (1-based line number, row) after checking the header has the FER2013 columns."""
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {missing}; expected a FER2013 CSV with header 'emotion,pixels,Usage', "
                f"got {reader.fieldnames}"
            )
        for index, row in enumerate(reader):
            yield index + 2, row  # line 1 is the header


def read_fer2013_csv(path: Path, num_classes: int = len(FER2013_CLASSES)) -> FERArrays:
    """Decode a FER2013-format CSV; any bad row stops with an error naming the file, line and problem."""
    images, labels, usage = [], [], []
    for line, row in iter_rows(path):
        where = f"{path}, line {line}"
        try:
            label = int(row["emotion"])
        except (TypeError, ValueError):
            message = f"{where}: emotion must be an integer 0..{num_classes - 1}, got {row['emotion']!r}"
            raise DataFormatError(message) from None
        if not 0 <= label < num_classes:
            raise DataFormatError(f"{where}: emotion must be in 0..{num_classes - 1}, got {label}")
        if row["Usage"] not in USAGES:
            raise DataFormatError(f"{where}: Usage must be one of {list(USAGES)}, got {row['Usage']!r}")
        images.append(parse_pixels(row["pixels"] or "", where))
        labels.append(label)
        usage.append(USAGES.index(row["Usage"]))
    if not images:
        raise DataFormatError(f"{path}: no data rows after the header")
    return FERArrays(np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(usage, dtype=np.int8))


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_fer2013(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FERArrays:
    """Decode `path` once and memory-map the cached arrays afterwards (cache keyed by the file's content)."""
    path = Path(path)
    if cache_dir is None:
        return read_fer2013_csv(path)
    entry = Path(cache_dir) / f"fer2013-v{CACHE_VERSION}-{file_sha256(path)[:16]}"
    if not (entry / "meta.json").exists():
        arrays = read_fer2013_csv(path)
        write_cache(entry, arrays, source=path)
    return FERArrays(*(np.load(entry / f"{name}.npy", mmap_mode="r") for name in ("images", "labels", "usage")))


def write_cache(entry: Path, arrays: FERArrays, source: Path) -> None:
    """Write the arrays, then `meta.json` last: an interrupted write leaves no entry that looks complete."""
    entry.mkdir(parents=True, exist_ok=True)
    for name in ("images", "labels", "usage"):
        tmp = entry / f"{name}.tmp.npy"
        np.save(tmp, getattr(arrays, name))
        tmp.replace(entry / f"{name}.npy")
    meta = {"source": str(source), "rows": int(arrays.labels.size), "version": CACHE_VERSION}
    (entry / "meta.json").write_text(json.dumps(meta, indent=2))

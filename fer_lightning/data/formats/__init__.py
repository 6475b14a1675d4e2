"""The `data.format` dispatch: one reader per on-disk format (a module of this package each), all decoded into
the same uint8 arrays (`SourceData`) for `FERDataModule`; `load_source` picks the reader.

- `fer2013`: Kaggle's CSV (`.csv`, `.csv.gz` or inside `fer2013.tar.gz`), split by its Usage column;
- `ferplus`: FER2013's pixels with the FER+ votes (`votes_path`), 8 classes, `majority` or `probability` labels;
- `fer2013_folders`: Kaggle's image edition (`train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`);
- `image_folder`: any `root/<class>/*` tree (gray or RGB, any size, any number of classes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_lightning.data.formats.fer2013 import load_fer2013
from fer_lightning.data.formats.ferplus import FERPLUS_SOURCE, ferplus_labels
from fer_lightning.data.formats.folders import load_image_folder
from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("fer2013", "ferplus", "fer2013_folders", "image_folder")
FER2013_SOURCE = (
    "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"
)
FER2013_FOLDERS_SOURCE = "https://www.kaggle.com/datasets/msambare/fer2013"


@dataclass
class SourceData:
    """images (N, H, W) or (N, H, W, 3) uint8; targets (N,) int64 class indices or (N, K) float32 probabilities;
    split (N,) int8: 0 train, 1 val, 2 test, -1 left to `data.split_fractions`; one message per skipped entry."""

    images: np.ndarray
    targets: np.ndarray
    split: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def subset(self, index: np.ndarray) -> SourceData:
        return SourceData(self.images[index], self.targets[index], self.split[index], self.skipped)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"data.format must be one of {list(FORMATS)}, got {fmt!r}")


def check_data_files(fmt: str, path: Path, votes_path: Path | None = None) -> None:
    """Stop early, saying where the data comes from, when a configured file or folder is missing."""
    if fmt in ("fer2013", "ferplus") and not path.exists():
        raise FileNotFoundError(
            f"FER2013 data not found at {path.resolve()}.\n"
            f"  Download fer2013.csv (or fer2013.csv.gz, or Kaggle's fer2013.tar.gz) from Kaggle: {FER2013_SOURCE}\n"
            f"  and put it there, or point to it with data.path=/path/to/fer2013.csv\n"
            "  To try the framework on the embedded synthetic data instead, add data=synthetic to the command\n"
            "  (python train.py data=synthetic)"
        )
    if fmt == "ferplus" and (votes_path is None or not votes_path.exists()):
        raise FileNotFoundError(
            f"FER+ votes not found at {votes_path}: download fer2013new.csv from {FERPLUS_SOURCE} and point to it "
            f"with data.votes_path=/path/to/fer2013new.csv"
        )
    if fmt in ("fer2013_folders", "image_folder") and not path.is_dir():
        where = f"Kaggle's image edition of FER2013 ({FER2013_FOLDERS_SOURCE})" if fmt == "fer2013_folders" else ""
        raise FileNotFoundError(
            f"image folder not found at {path.resolve()}: expected root/<class>/<image> or "
            f"root/{{train,val,test}}/<class>/<image> {where}; point to it with data.path=/path/to/root"
        )


def load_source(
    fmt: str,
    path: str | os.PathLike,
    *,
    class_names: list[str],
    in_chans: int,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    on_bad_rows: str = "error",
    votes_path: str | os.PathLike | None = None,
    label_mode: str = "majority",
) -> SourceData:
    """Decode (or memory-map from the cache) the data of any format; bad input is an error or skipped and listed."""
    check_format(fmt)
    path = Path(path)
    votes_path = Path(votes_path) if votes_path else None
    check_data_files(fmt, path, votes_path)
    if fmt in ("fer2013", "ferplus"):
        arrays = load_fer2013(path, cache_dir, on_bad_rows)
        data = SourceData(arrays.images, arrays.labels, arrays.usage, list(arrays.skipped))
        if fmt == "fer2013":
            return data
        index, targets, skipped = ferplus_labels(arrays, votes_path, label_mode, path, on_bad_rows)
        data = data.subset(index)
        return SourceData(data.images, targets, data.split, data.skipped + skipped)
    folder = load_image_folder(
        path, class_names, in_chans, image_size, cache_dir, on_bad_rows, usage_prefixes=fmt == "fer2013_folders"
    )
    return SourceData(folder.images, folder.labels, folder.split, folder.skipped)


def drop_blank_images(data: SourceData, source: Path | str) -> SourceData:
    """Leave out images of a single value (FER2013 has 12 all-black ones); the count is logged."""
    flat = data.images.reshape(len(data.images), -1)
    blank = flat.min(1) == flat.max(1)
    log.info("%s: dropped %d blank (single-value) images (data.drop_blank=true)", source, int(blank.sum()))
    return data.subset(np.flatnonzero(~blank)) if blank.any() else data

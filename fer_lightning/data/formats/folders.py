"""Image-folder data sets: `root/<class>/*` or `root/{train,val,test}/<class>/*`, any size, gray or RGB.

Two formats use it: `fer2013_folders` (Kaggle's image edition of FER2013, `train/<emotion>/Training_*.jpg` and
`test/<emotion>/{PublicTest,PrivateTest}_*.jpg`, whose file-name prefixes restore FER2013's exact split) and
`image_folder` (any tree; the classes are the sorted folder names). Images are decoded once with OpenCV to
uint8 at the configured size and channel count and cached as `.npy` (memory-mapped afterwards), keyed by the
tree's listing (relative path, size and modification time of every file) and the decode settings.

`image_folder_info` reads num_classes, class_names, in_chans and image_size from a tree; the `image_folder`
OmegaConf resolver (registered in `fer_lightning/config.py`) feeds them to the config, so that
`model.num_classes: ${data.num_classes}` and friends hold the data's real values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.data.formats.fer2013 import (
    SKIP_HINT,
    DataFormatError,
    check_policy,
    report_skipped,
    write_cache_entry,
)
from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
SPLIT_DIRS = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "testing": 2}
USAGE_PREFIXES = {"Training_": 0, "PublicTest_": 1, "PrivateTest_": 2}  # Kaggle's FER2013 image edition
CACHE_VERSION = 1


@dataclass
class FolderIndex:
    """Every image file of a tree with its class index and split (0 train, 1 val, 2 test, -1 not given)."""

    root: Path
    class_names: list[str]
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    split: list[int] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # one message per empty class folder
    ignored: list[Path] = field(default_factory=list)  # files that are not images by their extension


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder not found at {root.resolve()}: expected a directory root/<class>/<image> or "
            f"root/{{train,val,test}}/<class>/<image>; point to it with data.path=/path/to/root"
        )


def split_dirs(root: Path) -> list[tuple[int, Path]]:
    """[(split, folder holding class folders)]: root's train/val/test folders when it has a `train` folder."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not any(SPLIT_DIRS.get(p.name.lower()) == 0 for p in subdirs):
        return [(-1, root)]
    others = [p.name for p in subdirs if p.name.lower() not in SPLIT_DIRS]
    if others:
        raise DataFormatError(
            f"{root}: has a train folder, so every folder beside it must be a split ({sorted(SPLIT_DIRS)}); "
            f"found {others}"
        )
    return [(SPLIT_DIRS[p.name.lower()], p) for p in subdirs]


def class_dirs(root: Path) -> list[tuple[int, Path]]:
    dirs = [(split, p) for split, parent in split_dirs(root) for p in sorted(parent.iterdir()) if p.is_dir()]
    dirs = [(split, p) for split, p in dirs if not p.name.startswith(".")]
    if not dirs:
        raise DataFormatError(f"{root}: no class folders; expected root/<class>/<image> or root/train/<class>/<image>")
    return dirs


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, recursively, sorted; hidden files are not data."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]


def folder_class_names(root: Path) -> list[str]:
    """The classes of a tree: the sorted names of its class folders that hold at least one image."""
    names = {p.name for _, p in class_dirs(root) if list_images(p)[0]}
    if not names:
        raise DataFormatError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in any class folder")
    return sorted(names)


def scan_tree(root: Path, class_names: list[str], usage_prefixes: bool = False) -> FolderIndex:
    """Index a tree; class folders are matched to `class_names` case-insensitively (others are an error)."""
    check_root(root)
    lookup = {name.lower(): i for i, name in enumerate(class_names)}
    index = FolderIndex(root, list(class_names))
    for split, folder in class_dirs(root):
        images, others = list_images(folder)
        index.ignored += others
        if not images:
            index.empty.append(f"{folder}: empty class folder (expected image files {', '.join(IMAGE_EXTENSIONS)})")
            continue
        if folder.name.lower() not in lookup:
            raise DataFormatError(f"{folder}: class folder {folder.name!r} is not one of the classes {class_names}")
        for path in images:
            prefix = next((p for p in USAGE_PREFIXES if path.name.startswith(p)), None) if usage_prefixes else None
            index.files.append(path)
            index.labels.append(lookup[folder.name.lower()])
            index.split.append(USAGE_PREFIXES[prefix] if prefix else split)
    if index.ignored:
        log.warning("%s: ignored %d files that are not images, e.g. %s", root, len(index.ignored), index.ignored[0])
    return index


def decode_image(path: Path, in_chans: int, size: int) -> np.ndarray | None:
    """(size, size) gray or (size, size, 3) RGB uint8, or None when OpenCV cannot decode the file."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if in_chans == 1 else cv2.IMREAD_COLOR)
    if image is None:
        return None
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image if in_chans == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_files(files: list[Path], in_chans: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, indices of the files that decoded, one message per unreadable file)."""
    shape = (size, size) if in_chans == 1 else (size, size, 3)
    images = np.empty((len(files), *shape), np.uint8)
    kept, bad = [], []
    for i, path in enumerate(files):
        image = decode_image(path, in_chans, size)
        if image is None:
            bad.append(
                f"{path}: unreadable image file (expected an image OpenCV can decode: {', '.join(IMAGE_EXTENSIONS)})"
            )
            continue
        images[len(kept)] = image
        kept.append(i)
    return images[: len(kept)], np.asarray(kept, dtype=np.int64), bad


def listing_key(index: FolderIndex, in_chans: int, size: int) -> str:
    """Cache key: every file's relative path, size and mtime, plus the decode settings."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, in_chans, size]).encode())
    for path in index.files:
        stat = path.stat()
        digest.update(f"{path.relative_to(index.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def decode_cached(index: FolderIndex, in_chans: int, size: int, cache_dir: str | os.PathLike | None):
    """(images, kept indices, bad-file messages), decoded once and memory-mapped from the cache afterwards."""
    if cache_dir is None:
        return decode_files(index.files, in_chans, size)
    entry = Path(cache_dir) / f"folder-v{CACHE_VERSION}-{listing_key(index, in_chans, size)}"
    if not (entry / "meta.json").exists():
        images, kept, bad = decode_files(index.files, in_chans, size)
        if not write_cache_entry(entry, {"images": images, "kept": kept}, {"root": str(index.root), "bad": bad}):
            return images, kept, bad  # an unwritable cache (warned): decoded in memory
    bad = json.loads((entry / "meta.json").read_text())["bad"]
    return np.load(entry / "images.npy", mmap_mode="r"), np.load(entry / "kept.npy"), bad


@dataclass
class FolderData:
    images: np.ndarray  # (N, H, W) or (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) int8: 0 train, 1 val, 2 test, -1 not given by the tree
    skipped: list[str]


def load_image_folder(
    root: str | os.PathLike,
    class_names: list[str],
    in_chans: int,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    on_bad_rows: str = "error",
    usage_prefixes: bool = False,
) -> FolderData:
    """Decode a tree (see the module docstring); empty class folders and unreadable files stop with an error
    naming them, or with `on_bad_rows="skip"` are skipped and listed."""
    check_policy(on_bad_rows)
    if in_chans not in (1, 3):
        raise UserError(f"data.in_chans must be 1 (gray) or 3 (RGB) for image folders, got {in_chans}")
    index = scan_tree(Path(root), class_names, usage_prefixes)
    images, kept, bad = decode_cached(index, in_chans, image_size, cache_dir)
    problems = index.empty + bad
    if problems and on_bad_rows == "error":
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataFormatError(f"{problems[0]}{more}\n  ({SKIP_HINT})")
    if not len(kept):
        raise DataFormatError(f"{root}: no readable image in any class folder")
    report_skipped(root, problems, what="files or folders")
    labels = np.asarray(index.labels, dtype=np.int64)[kept]
    return FolderData(images, labels, np.asarray(index.split, dtype=np.int8)[kept], problems)


def image_folder_info(root: str | os.PathLike) -> dict:
    """num_classes, class_names, in_chans and image_size of a tree, from its folders and one image per class.

    in_chans is 3 when any sampled image has distinct color channels (RGB saved as gray is gray); image_size is
    the most common longer side among the samples (every image is resized to it when decoded).
    """
    root = Path(root)
    check_root(root)
    names = folder_class_names(root)
    wanted = {name.lower() for name in names}
    samples = []
    for _, folder in class_dirs(root):
        if folder.name.lower() in wanted:
            image = next((im for im in map(read_unchanged, list_images(folder)[0][:10]) if im is not None), None)
            samples += [image] if image is not None else []
    if not samples:
        raise DataFormatError(f"{root}: none of the sampled image files can be decoded")
    size = Counter(max(image.shape[:2]) for image in samples).most_common(1)[0][0]
    return {
        "num_classes": len(names),
        "class_names": names,
        "in_chans": max(map(channels, samples)),
        "image_size": size,
    }


def read_unchanged(path: Path) -> np.ndarray | None:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def channels(image: np.ndarray) -> int:
    if image.ndim == 2 or image.shape[2] == 1:
        return 1
    color = image[..., :3]
    return 1 if (color == color[..., :1]).all() else 3

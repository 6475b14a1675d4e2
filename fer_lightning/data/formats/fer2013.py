"""Reader for Kaggle's FER2013 CSV (`emotion,pixels,Usage`), with a decoded uint8 cache.

The CSV is read as shipped: plain, gzipped (`fer2013.csv.gz`) or inside Kaggle's `fer2013.tar.gz`, streamed from
the archive without unpacking it. Decoding 300 MB of text takes seconds; the decoded arrays are cached as `.npy`
files keyed by the source file's sha256, so a second run memory-maps them instead of parsing again.

Bad rows stop with a `DataFormatError` naming the file, the line and what was expected; with
`on_bad_rows="skip"` they are skipped and listed instead. The cache always holds the rows that decoded and the
list of those that did not, so the policy is applied after the cache and never reuses a wrong entry.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_SIZE = 48
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLIT_OF_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
REQUIRED_COLUMNS = ("emotion", "pixels", "Usage")
BAD_ROW_POLICIES = ("error", "skip")
CACHE_VERSION = 2  # bump when the decoded layout changes, so stale caches are not reused
SKIP_HINT = "set data.on_bad_rows=skip to skip bad rows and list them instead"


class DataFormatError(UserError):
    """A data file does not have the expected format; the message names the file, row and expectation."""


@dataclass
class FERArrays:
    """A decoded FER data set: images (N, H, W) uint8, labels (N,) int64, usage (N,) int8 index into USAGES,
    rows (N,) int64 the 0-based data row of each image in the file, and one message per skipped row."""

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    rows: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def split(self, usage: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.usage == USAGES.index(usage)
        return self.images[mask], self.labels[mask]


def check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise UserError(f"data.on_bad_rows must be one of {list(BAD_ROW_POLICIES)}, got {on_bad_rows!r}")


def is_tar(path: Path) -> bool:
    return path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


@contextmanager
def open_text(path: Path) -> Iterator[TextIO]:
    """Open a CSV as text: plain, `.gz`, or the first `.csv` member of a tar archive (streamed, not unpacked)."""
    if is_tar(path):
        with tarfile.open(path, "r:*") as archive:
            member = next((m for m in archive if m.isfile() and m.name.lower().endswith(".csv")), None)
            if member is None:
                names = archive.getnames()[:10]
                raise DataFormatError(f"{path}: no .csv file inside the archive (it holds {names})")
            log.info("reading %s from the archive %s", member.name, path)
            with io.TextIOWrapper(archive.extractfile(member), encoding="utf-8", newline="") as handle:
                yield handle
    elif path.suffix == ".gz":
        with io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="") as handle:
            yield handle
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            yield handle


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


def parse_row(row: dict[str, str], where: str, num_classes: int) -> tuple[np.ndarray, int, int]:
    """(image, label, usage index) of one CSV row, or a `DataFormatError` naming `where`."""
    check_row_length(row, where)
    try:
        label = int(row["emotion"])
    except (TypeError, ValueError):
        message = f"{where}: emotion must be an integer 0..{num_classes - 1}, got {row['emotion']!r}"
        raise DataFormatError(message) from None
    if not 0 <= label < num_classes:
        raise DataFormatError(f"{where}: emotion must be in 0..{num_classes - 1}, got {label}")
    if row["Usage"] not in USAGES:
        raise DataFormatError(f"{where}: Usage must be one of {list(USAGES)}, got {row['Usage']!r}")
    return parse_pixels(row["pixels"] or "", where), label, USAGES.index(row["Usage"])


def check_row_length(row: dict, where: str) -> None:
    """csv.DictReader fills a short row's missing fields with None and puts a long row's extras under the key None:
    name both plainly (a file cut off mid-row would otherwise read as a bad Usage value)."""
    missing = [name for name in REQUIRED_COLUMNS if row.get(name) is None]
    if missing:
        present = len([value for key, value in row.items() if key is not None and value is not None])
        message = f"{where}: row truncated: {present} of {len(row) - (None in row)} fields, missing {missing}"
        raise DataFormatError(f"{message} (is the file cut off mid-row?)")
    if None in row:
        raise DataFormatError(f"{where}: {len(row[None])} field(s) more than the header's {len(row) - 1}")


def check_columns(path: Path, fieldnames: list[str] | None, required: tuple[str, ...], expected: str) -> None:
    missing = [c for c in required if c not in (fieldnames or [])]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; expected {expected}, got {fieldnames}")


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (1-based line number, row) after checking the header has the FER2013 columns."""
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        check_columns(path, reader.fieldnames, REQUIRED_COLUMNS, "a FER2013 CSV with header 'emotion,pixels,Usage'")
        for index, row in enumerate(reader):
            yield index + 2, row  # line 1 is the header


@contextmanager
def readable(path: Path) -> Iterator[None]:
    """Turn a damaged file (bad gzip, truncated archive, binary junk) into a `DataFormatError` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, EOFError, tarfile.TarError, UnicodeDecodeError, csv.Error) as error:
        raise DataFormatError(f"{path}: cannot be read as a CSV ({type(error).__name__}: {error})") from error


def read_fer2013_csv(path: Path, num_classes: int = len(FER2013_CLASSES), on_bad_rows: str = "error") -> FERArrays:
    """Decode a FER2013-format CSV; a bad row stops with an error naming the file, line and problem, or with
    `on_bad_rows="skip"` is left out and listed in `skipped`."""
    check_policy(on_bad_rows)
    images, labels, usage, rows, skipped = [], [], [], [], []
    with readable(path):
        for line, row in iter_rows(path):
            try:
                image, label, use = parse_row(row, f"{path}, line {line}", num_classes)
            except DataFormatError as error:
                if on_bad_rows == "error":
                    raise DataFormatError(f"{error}\n  ({SKIP_HINT})") from None
                skipped.append(str(error))
                continue
            images.append(image)
            labels.append(label)
            usage.append(use)
            rows.append(line - 2)
    if not images:
        raise DataFormatError(f"{path}: no valid data rows after the header ({len(skipped)} bad rows skipped)")
    return FERArrays(
        np.stack(images),
        np.asarray(labels, dtype=np.int64),
        np.asarray(usage, dtype=np.int8),
        np.asarray(rows, dtype=np.int64),
        skipped,
    )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def report_skipped(source: Path | str, skipped: list[str], what: str = "rows") -> None:
    """Log how many and which entries were skipped (the first 20 in full, all of them in `skipped`)."""
    if not skipped:
        return
    shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
    log.warning("%s: skipped %d bad %s (data.on_bad_rows=skip):\n  %s", source, len(skipped), what, shown)


def load_fer2013(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, on_bad_rows: str = "error"
) -> FERArrays:
    """Decode `path` once and memory-map the cached arrays afterwards (cache keyed by the file's content)."""
    path = Path(path)
    check_policy(on_bad_rows)
    if cache_dir is None:
        arrays = read_fer2013_csv(path, on_bad_rows=on_bad_rows)
    else:
        entry = Path(cache_dir) / f"fer2013-v{CACHE_VERSION}-{file_sha256(path)[:16]}"
        if (entry / "meta.json").exists():
            arrays = read_cache(entry, source=path)
        else:
            # decode everything that can be decoded; which rows are bad is stored, and the policy applied below
            arrays = read_fer2013_csv(path, on_bad_rows="skip")
            if write_cache(entry, arrays, source=path):
                arrays = read_cache(entry, source=path)  # memory-mapped, as every later run reads it
        if arrays.skipped and on_bad_rows == "error":
            more = f" (and {len(arrays.skipped) - 1} more bad rows)" if len(arrays.skipped) > 1 else ""
            raise DataFormatError(f"{arrays.skipped[0]}{more}\n  ({SKIP_HINT})")
    report_skipped(path, arrays.skipped)
    return arrays


ARRAY_NAMES = ("images", "labels", "usage", "rows")


def write_cache_entry(entry: Path, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """A cache entry of any format: each array as `<name>.npy` (written aside, then renamed), `meta.json` last, so
    an interrupted write leaves no entry that looks complete (readers test for `meta.json`).

    False, with a warning, when the cache cannot be written (a read-only file system, no permission, a file where
    a directory should be, a full disk): the caller goes on with the arrays it decoded, in memory.
    """
    # Per-writer temporary names: two runs creating the same entry at once each rename their own complete file
    # (the same bytes) into place; a shared temporary name let one writer rename the other's away mid-write.
    writer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = entry / f"meta.{writer}.tmp.json"
    try:
        entry.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            tmp = entry / f"{name}.{writer}.tmp.npy"
            np.save(tmp, array)
            tmp.replace(entry / f"{name}.npy")
        tmp = entry / f"meta.{writer}.tmp.json"
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(entry / "meta.json")
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.warning(
            "cannot write the data cache %s (%s): the data is decoded in memory, again on every run; "
            "point paths.cache_dir at a writable directory to cache it",
            entry,
            error,
        )
        return False
    return True


def write_cache(entry: Path, arrays: FERArrays, source: Path) -> bool:
    meta = {"source": str(source), "rows": int(arrays.labels.size), "version": CACHE_VERSION}
    meta["skipped"] = arrays.skipped
    return write_cache_entry(entry, {name: getattr(arrays, name) for name in ARRAY_NAMES}, meta)


def read_cache(entry: Path, source: Path) -> FERArrays:
    """Memory-map a cache entry; skipped-row messages name `source` (the same content may have moved)."""
    meta = json.loads((entry / "meta.json").read_text())
    skipped = [message.replace(meta["source"], str(source), 1) for message in meta.get("skipped", [])]
    return FERArrays(*(np.load(entry / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES), skipped=skipped)

"""FER+ (Barsoum et al. 2016, microsoft/FERPlus): FER2013's pixels relabelled by 10 annotators into 8 emotions.

`fer2013new.csv` has one row per FER2013 row, in the same order: `Usage,Image name,<8 emotions>,unknown,NF`
(vote counts). Two label modes, following the FER+ reference code (`_process_data` in microsoft/FERPlus):

- `majority`: a single vote for an emotion is treated as noise and removed; the label is the emotion with more than
  half of the remaining votes. Rows without such a majority, or whose majority is unknown or not-a-face (NF), are
  dropped, as the FER+ paper does.
- `probability`: the soft target is the distribution of the (single-vote-cleaned) emotion votes. Rows whose top
  vote is unknown or NF (or that have no emotion vote left) are dropped.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_lightning.data.formats.fer2013 import (
    SKIP_HINT,
    USAGES,
    DataFormatError,
    FERArrays,
    check_columns,
    check_policy,
    open_text,
    readable,
    report_skipped,
)
from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
VOTE_COLUMNS = (*FERPLUS_CLASSES, "unknown", "NF")
LABEL_MODES = ("majority", "probability")
FERPLUS_SOURCE = "https://github.com/microsoft/FERPlus (fer2013new.csv)"


@dataclass
class FERPlusVotes:
    """votes (N, 10) int64 in VOTE_COLUMNS order and usage (N,) int8 (-1 for a skipped row), one row per FER2013
    row; skipped rows stay in place (so row i is still FER2013's row i) and are listed in `skipped`."""

    votes: np.ndarray
    usage: np.ndarray
    skipped: list[str] = field(default_factory=list)


def parse_votes(row: dict[str, str], where: str) -> tuple[list[int], int]:
    try:
        votes = [int(row[name]) for name in VOTE_COLUMNS]
    except (TypeError, ValueError):
        found = [row[name] for name in VOTE_COLUMNS]
        raise DataFormatError(f"{where}: the {len(VOTE_COLUMNS)} vote columns must be integers, got {found}") from None
    if min(votes) < 0:
        raise DataFormatError(f"{where}: vote counts must be >= 0, got {votes}")
    if row["Usage"] not in USAGES:
        raise DataFormatError(f"{where}: Usage must be one of {list(USAGES)}, got {row['Usage']!r}")
    return votes, USAGES.index(row["Usage"])


def read_ferplus_votes(path: Path, on_bad_rows: str = "error") -> FERPlusVotes:
    """Read `fer2013new.csv`; a bad row stops with an error naming file, line and expectation (or is skipped)."""
    check_policy(on_bad_rows)
    votes, usage, skipped = [], [], []
    with readable(path), open_text(path) as handle:
        reader = csv.DictReader(handle)
        expected = f"FER+ columns 'Usage,Image name,{','.join(VOTE_COLUMNS)}'"
        check_columns(path, reader.fieldnames, ("Usage", *VOTE_COLUMNS), expected)
        for index, row in enumerate(reader):
            try:
                row_votes, row_usage = parse_votes(row, f"{path}, line {index + 2}")
            except DataFormatError as error:
                if on_bad_rows == "error":
                    raise DataFormatError(f"{error}\n  ({SKIP_HINT})") from None
                skipped.append(str(error))
                row_votes, row_usage = [0] * len(VOTE_COLUMNS), -1
            votes.append(row_votes)
            usage.append(row_usage)
    if not votes:
        raise DataFormatError(f"{path}: no data rows after the header")
    report_skipped(path, skipped)
    return FERPlusVotes(np.asarray(votes, dtype=np.int64), np.asarray(usage, dtype=np.int8), skipped)


def ferplus_targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, targets): class indices (N,) for `majority`, probabilities (N, 8) float32 for `probability`."""
    if mode not in LABEL_MODES:
        raise UserError(f"data.label_mode must be one of {list(LABEL_MODES)}, got {mode!r}")
    votes = np.where(votes <= 1, 0, votes).astype(np.float64)  # a lone vote is an outlier (FER+ reference code)
    emotions, not_emotion = votes[:, : len(FERPLUS_CLASSES)], votes[:, len(FERPLUS_CLASSES) :]
    if mode == "majority":
        top = votes.argmax(1)
        keep = (top < len(FERPLUS_CLASSES)) & (votes.max(1) > 0.5 * votes.sum(1))
        return keep, top.astype(np.int64)
    keep = emotions.max(1) > not_emotion.max(1)  # the top vote is an emotion, not unknown / not-a-face
    probabilities = emotions / np.maximum(emotions.sum(1, keepdims=True), 1.0)
    return keep, probabilities.astype(np.float32)


def check_alignment(arrays: FERArrays, votes: FERPlusVotes, fer_path: Path, votes_path: Path) -> None:
    """FER+ rows must be FER2013's rows in the same order: same row count and the same Usage row by row."""
    fer_rows = len(arrays.rows) + len(arrays.skipped)
    if len(votes.usage) != fer_rows:
        raise DataFormatError(
            f"{votes_path} has {len(votes.usage)} rows but {fer_path} has {fer_rows}: FER+ votes must list every "
            f"FER2013 row in the same order"
        )
    usage = votes.usage[arrays.rows]
    mismatch = np.flatnonzero((usage >= 0) & (usage != arrays.usage))
    if mismatch.size:
        i = int(mismatch[0])
        raise DataFormatError(
            f"{votes_path}, line {int(arrays.rows[i]) + 2}: Usage {USAGES[usage[i]]!r} differs from "
            f"{USAGES[arrays.usage[i]]!r} in {fer_path} ({mismatch.size} rows differ); FER+ rows must follow FER2013's"
        )


def ferplus_labels(
    arrays: FERArrays, votes_path: Path, mode: str, fer_path: Path, on_bad_rows: str = "error"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(indices into `arrays` to keep, their FER+ targets, skipped-row messages of the votes file)."""
    votes = read_ferplus_votes(votes_path, on_bad_rows)
    check_alignment(arrays, votes, fer_path, votes_path)
    keep, targets = ferplus_targets(votes.votes, mode)
    keep &= votes.usage >= 0
    index = np.flatnonzero(keep[arrays.rows])
    dropped = len(arrays.rows) - len(index)
    log.info(
        "FER+ %s labels: kept %d of %d rows; dropped %d whose majority is unknown / not-a-face%s",
        mode, len(index), len(arrays.rows), dropped, " or without a majority" if mode == "majority" else "",
    )  # fmt: skip
    return index, targets[arrays.rows[index]], votes.skipped

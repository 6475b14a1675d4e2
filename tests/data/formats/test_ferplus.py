"""FER+ votes: the majority / probability rules on hand-made rows, alignment with FER2013, bad rows, the real file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data.formats.fer2013 import DataFormatError, load_fer2013
from fer_lightning.data.formats.ferplus import ferplus_labels, ferplus_targets, read_ferplus_votes
from tests.conftest import REAL_FER2013, write_fer_csv
from tests.data.conftest import write_votes_csv

# neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
VOTES = [
    [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],  # lone sadness vote removed -> 4 of 9: no majority
    [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],  # lone votes removed -> neutral 6 of 8
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face (FER+ leaves the image name empty)
    [0, 0, 0, 0, 0, 0, 0, 0, 6, 4],  # majority unknown
    [0, 0, 0, 0, 0, 0, 0, 5, 3, 2],  # contempt 5 of 10: not more than half
    [5, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # 9 votes (like FER+ row 10435): neutral 5 of 9
    [0, 0, 0, 0, 0, 0, 0, 8, 0, 2],  # contempt 8 of 10
]


def test_majority_follows_the_ferplus_reference_rule() -> None:
    keep, labels = ferplus_targets(np.array(VOTES), "majority")
    assert keep.tolist() == [False, True, False, False, False, True, True]
    assert labels[keep].tolist() == [0, 0, 7]


def test_probability_is_the_cleaned_emotion_vote_distribution() -> None:
    keep, probs = ferplus_targets(np.array(VOTES), "probability")
    assert keep.tolist() == [True, True, False, False, True, True, True]
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs[0], [4 / 9, 0, 0, 0, 3 / 9, 2 / 9, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(probs[1], [1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(probs[5], [5 / 9, 4 / 9, 0, 0, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(probs[keep].sum(1), 1.0, rtol=1e-6)


def test_unknown_label_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="label_mode must be one of"):
        ferplus_targets(np.array(VOTES), "soft")


def fer_and_votes(tmp_path: Path, usage: list[str] | None = None) -> tuple[Path, Path]:
    fer = write_fer_csv(tmp_path / "fer2013.csv", {"Training": 3, "PublicTest": 2, "PrivateTest": 2})
    usage = usage or ["Training"] * 3 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    return fer, write_votes_csv(tmp_path / "fer2013new.csv", VOTES, usage)


def test_labels_join_fer2013_rows_in_order(tmp_path: Path) -> None:
    fer, votes = fer_and_votes(tmp_path)
    index, labels, skipped = ferplus_labels(load_fer2013(fer), votes, "majority", fer)
    assert index.tolist() == [1, 5, 6]
    assert labels.tolist() == [0, 0, 7]
    assert skipped == []


def test_row_count_mismatch_is_an_error(tmp_path: Path) -> None:
    fer, _ = fer_and_votes(tmp_path)
    short = write_votes_csv(tmp_path / "short.csv", VOTES[:5], ["Training"] * 5)
    with pytest.raises(DataFormatError, match="has 5 rows but .* has 7"):
        ferplus_labels(load_fer2013(fer), short, "majority", fer)


def test_usage_mismatch_names_the_line(tmp_path: Path) -> None:
    fer, votes = fer_and_votes(tmp_path, ["Training"] * 4 + ["PublicTest"] + ["PrivateTest"] * 2)
    with pytest.raises(DataFormatError, match=r"fer2013new.csv, line 5: Usage 'Training' differs from 'PublicTest'"):
        ferplus_labels(load_fer2013(fer), votes, "majority", fer)


def test_bad_vote_row_is_an_error_or_skipped(tmp_path: Path) -> None:
    fer, votes = fer_and_votes(tmp_path)
    lines = votes.read_text().splitlines()
    lines[2] = lines[2].replace(",6,", ",six,", 1)
    votes.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013new.csv, line 3: the 10 vote columns must be integers"):
        read_ferplus_votes(votes)
    index, _, skipped = ferplus_labels(load_fer2013(fer), votes, "majority", fer, on_bad_rows="skip")
    assert index.tolist() == [5, 6]  # the row of line 3 (neutral 6 of 8) is skipped
    assert len(skipped) == 1
    assert "line 3" in skipped[0]


def test_missing_vote_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "votes.csv"
    path.write_text("Usage,Image name,neutral,happiness\nTraining,a.png,10,0\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['surprise'"):
        read_ferplus_votes(path)


@pytest.mark.real_data
def test_real_ferplus_votes(real_fer2013: Path, real_cache: Path) -> None:
    votes = read_ferplus_votes(REAL_FER2013 / "fer2013new.csv")
    assert votes.votes.shape == (35887, 10)
    assert np.bincount(votes.usage).tolist() == [28709, 3589, 3589]
    assert votes.votes.sum(1).tolist().count(9) == 1
    assert votes.votes[10435].sum() == 9
    with open(REAL_FER2013 / "fer2013new.csv", newline="") as handle:
        unnamed = np.array([row["Image name"] == "" for row in csv.DictReader(handle)])
    not_faces = np.flatnonzero(unnamed)
    assert len(not_faces) == 173
    assert (votes.votes[not_faces, 9] == 10).all()
    arrays = load_fer2013(real_fer2013, real_cache)
    for mode in ("majority", "probability"):
        index, targets, _ = ferplus_labels(arrays, REAL_FER2013 / "fer2013new.csv", mode, real_fer2013)
        assert not set(not_faces) & set(index.tolist())  # the paper drops not-a-face rows
        labels = targets if mode == "majority" else targets.argmax(1)
        assert np.bincount(labels, minlength=8).min() > 0  # all 8 classes, contempt included
        assert 30000 < len(index) < 35887 - 173

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data import fer2013
from fer_lightning.data.fer2013 import DataFormatError, load_fer2013, read_fer2013_csv
from tests.conftest import write_fer_csv


def test_reads_splits_labels_and_pixels(fer_csv: Path) -> None:
    arrays = read_fer2013_csv(fer_csv)
    assert arrays.images.shape == (70, 48, 48)
    assert arrays.images.dtype == np.uint8
    assert [int((arrays.usage == i).sum()) for i in range(3)] == [42, 14, 14]
    first_pixels = fer_csv.read_text().splitlines()[1].split(",")[1].split()
    assert arrays.images[0].ravel().tolist() == [int(v) for v in first_pixels]
    images, labels = arrays.split("PublicTest")
    assert len(images) == 14
    assert labels.tolist() == [i % 7 for i in range(14)]


def test_reads_gzip_like_plain(fer_csv: Path, tmp_path: Path) -> None:
    gz = tmp_path / "fer2013.csv.gz"
    with open(fer_csv, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert np.array_equal(read_fer2013_csv(gz).images, read_fer2013_csv(fer_csv).images)


def corrupt(path: Path, line: int, field: int, value: str) -> Path:
    lines = path.read_text().splitlines()
    parts = lines[line - 1].split(",")
    parts[field] = value
    lines[line - 1] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (1, " ".join(["1"] * 2000), "expected 2304 pixels"),
        (1, "1 2 x " + " ".join(["1"] * 2301), "non-numeric"),
        (1, "300 " + " ".join(["1"] * 2303), "0..255"),
        (0, "9", "emotion must be in 0..6"),
        (0, "happy", "emotion must be an integer"),
        (2, "Validation", "Usage must be one of"),
    ],
)
def test_bad_row_names_file_line_and_expectation(fer_csv: Path, field: int, value: str, message: str) -> None:
    corrupt(fer_csv, 5, field, value)
    with pytest.raises(DataFormatError, match=message) as error:
        read_fer2013_csv(fer_csv)
    assert f"{fer_csv}, line 5" in str(error.value)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels\n0," + " ".join(["0"] * 2304) + "\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['Usage'\]"):
        read_fer2013_csv(path)


def test_cache_is_reused_without_parsing(fer_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_fer2013(fer_csv, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("the cached file was parsed again")

    monkeypatch.setattr(fer2013, "read_fer2013_csv", fail)
    second = load_fer2013(fer_csv, tmp_path / "cache")
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)


def test_cache_follows_file_content(tmp_path: Path) -> None:
    path = write_fer_csv(tmp_path / "a.csv", {"Training": 7, "PublicTest": 7, "PrivateTest": 7}, seed=1)
    before = load_fer2013(path, tmp_path / "cache").images.copy()
    write_fer_csv(path, {"Training": 7, "PublicTest": 7, "PrivateTest": 7}, seed=2)
    assert not np.array_equal(before, load_fer2013(path, tmp_path / "cache").images)


@pytest.mark.real_data
def test_real_fer2013_splits_and_class_counts(real_fer2013: Path, tmp_path: Path) -> None:
    arrays = load_fer2013(real_fer2013, tmp_path / "cache")
    # Counts from ../shared/data/fer2013/README.md (measured on the Kaggle file)
    expected = {
        "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
        "PublicTest": [467, 56, 496, 895, 653, 415, 607],
        "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
    }
    assert arrays.images.shape == (35887, 48, 48)
    for usage, counts in expected.items():
        _, labels = arrays.split(usage)
        assert np.bincount(labels, minlength=7).tolist() == counts

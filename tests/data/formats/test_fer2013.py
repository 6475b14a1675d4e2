"""The FER2013 CSV reader: plain, gzip and Kaggle's tar.gz; per-row errors or skips; the cache; the real file."""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data.formats import fer2013
from fer_lightning.data.formats.fer2013 import DataFormatError, load_fer2013, read_fer2013_csv
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


def test_reads_kaggle_tar_gz_without_unpacking(fer_csv: Path, tmp_path: Path) -> None:
    archive = tmp_path / "kaggle" / "fer2013.tar.gz"
    archive.parent.mkdir()
    readme = tmp_path / "README"
    readme.write_text("Kaggle's README comes first in the archive")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(readme, arcname="fer2013/README")
        tar.add(fer_csv, arcname="fer2013/fer2013.csv")
    arrays = read_fer2013_csv(archive)
    assert np.array_equal(arrays.images, read_fer2013_csv(fer_csv).images)
    assert sorted(p.name for p in archive.parent.iterdir()) == ["fer2013.tar.gz"]  # nothing unpacked beside it


def test_tar_without_csv_names_the_archive(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("no data")
    archive = tmp_path / "fer2013.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "README", arcname="fer2013/README")
    with pytest.raises(DataFormatError, match=r"no \.csv file inside the archive"):
        read_fer2013_csv(archive)


def test_damaged_gzip_is_named(tmp_path: Path) -> None:
    path = tmp_path / "fer2013.csv.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataFormatError, match="cannot be read") as error:
        read_fer2013_csv(path)
    assert str(path) in str(error.value)


def test_a_file_cut_off_mid_row_says_row_truncated(fer_csv: Path, tmp_path: Path) -> None:
    text = fer_csv.read_text()
    last_comma = text.rstrip("\n").rfind(",")  # the final row loses its Usage field, as in an interrupted download
    path = tmp_path / "cut.csv"
    path.write_text(text[:last_comma])
    line = text[:last_comma].count("\n") + 1
    with pytest.raises(DataFormatError, match=r"row truncated: 2 of 3 fields, missing \['Usage'\]") as error:
        read_fer2013_csv(path)
    assert f"{path}, line {line}:" in str(error.value)


def test_a_row_longer_than_the_header_is_named(fer_csv: Path, tmp_path: Path) -> None:
    lines = fer_csv.read_text().splitlines()
    lines[3] += ",extra"
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="line 4: 1 field\\(s\\) more than the header's 3"):
        read_fer2013_csv(path)


def test_header_only_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataFormatError, match="no valid data rows"):
        read_fer2013_csv(path)


def test_skip_leaves_out_and_reports_bad_rows(fer_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    corrupt(fer_csv, 3, 1, "1 2 3")
    corrupt(fer_csv, 7, 2, "Validation")
    with pytest.raises(DataFormatError, match="on_bad_rows=skip"):
        read_fer2013_csv(fer_csv)
    with caplog.at_level(logging.WARNING):
        arrays = load_fer2013(fer_csv, on_bad_rows="skip")
    assert len(arrays.labels) == 68
    assert len(arrays.skipped) == 2
    assert f"{fer_csv}, line 3: expected 2304 pixels" in arrays.skipped[0]
    assert f"{fer_csv}, line 7: Usage must be one of" in arrays.skipped[1]
    assert "skipped 2 bad rows" in caplog.text
    assert "line 3" in caplog.text
    assert "line 7" in caplog.text
    assert 1 not in arrays.rows
    assert 5 not in arrays.rows


def test_cached_decode_still_applies_the_policy(fer_csv: Path, tmp_path: Path) -> None:
    corrupt(fer_csv, 4, 0, "7")
    cache = tmp_path / "cache"
    assert len(load_fer2013(fer_csv, cache, on_bad_rows="skip").labels) == 69
    with pytest.raises(DataFormatError, match=r"line 4: emotion must be in 0\.\.6"):
        load_fer2013(fer_csv, cache)  # the cache holds the skipped row: error mode must not reuse it silently
    assert load_fer2013(fer_csv, cache, on_bad_rows="skip").skipped == [
        f"{fer_csv}, line 4: emotion must be in 0..6, got 7"
    ]


def test_unknown_policy_is_rejected(fer_csv: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_rows must be one of"):
        load_fer2013(fer_csv, on_bad_rows="ignore")


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


README_COUNTS = {  # ../shared/data/fer2013/README.md, measured on the Kaggle file
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
    "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
}
README_BLANK_ROWS = [6458, 7629, 10423, 11286, 13148, 13402, 13988, 15894, 22198, 22927, 28601, 30002]


@pytest.mark.real_data
def test_real_fer2013_splits_and_class_counts(real_fer2013: Path, real_cache: Path) -> None:
    arrays = load_fer2013(real_fer2013, real_cache)
    assert arrays.images.shape == (35887, 48, 48)
    assert not arrays.skipped
    assert np.array_equal(arrays.rows, np.arange(35887))
    for usage, counts in README_COUNTS.items():
        _, labels = arrays.split(usage)
        assert np.bincount(labels, minlength=7).tolist() == counts
    assert [len(arrays.split(u)[1]) for u in ("Training", "PublicTest", "PrivateTest")] == [28709, 3589, 3589]
    flat = arrays.images.reshape(len(arrays.images), -1)
    assert np.flatnonzero(flat.max(1) == 0).tolist() == README_BLANK_ROWS


# Two writers of the same cache entry, started together, each writing it over and over: they collide (before
# per-writer temporary names one of them died renaming a file the other had already renamed away:
# FileNotFoundError .../images.tmp.npy -> .../images.npy).
CONCURRENT_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from fer_lightning.data.formats.fer2013 import write_cache_entry
root, start, rounds = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
arrays = {"images": np.zeros((400, 48, 48), np.uint8), "labels": np.arange(400)}
while time.time() < start:
    pass
for _ in range(rounds):
    write_cache_entry(root / "entry", arrays, {"rows": 400})
"""


def test_concurrent_cache_writers_both_succeed(tmp_path: Path) -> None:
    rounds, start = 120, time.time() + 3.0  # both interpreters are up by then
    command = [sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path), str(start), str(rounds)]
    writers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    entry = tmp_path / "entry"
    assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "labels.npy", "meta.json"]  # no temporary left
    assert np.load(entry / "labels.npy").tolist() == list(range(400))

"""A data cache that cannot be written (read-only file system, no permission, a file in its place): the data is
decoded in memory instead, with a warning that names the cache and `paths.cache_dir` (issue 16)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data.formats.fer2013 import load_fer2013
from fer_lightning.data.formats.folders import load_image_folder
from tests.data.conftest import write_images


def assert_decoded_in_memory(arrays, fer_csv: Path, caplog: pytest.LogCaptureFixture, cache: Path) -> None:
    expected = load_fer2013(fer_csv)  # no cache at all
    assert np.array_equal(arrays.images, expected.images)
    assert np.array_equal(arrays.labels, expected.labels)
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(cache) in warning
    assert "paths.cache_dir" in warning


def test_a_file_where_the_cache_directory_should_be(fer_csv: Path, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a directory")  # stops writes even for root
    with caplog.at_level(logging.WARNING):
        arrays = load_fer2013(fer_csv, cache_dir=cache)
    assert_decoded_in_memory(arrays, fer_csv, caplog, cache)


def test_a_read_only_file_system(fer_csv: Path, tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(np, "save", read_only)  # the directory can be made, its files not written
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        arrays = load_fer2013(fer_csv, cache_dir=cache)
    assert_decoded_in_memory(arrays, fer_csv, caplog, cache)
    assert "Read-only file system" in caplog.text
    assert not list(cache.rglob("*.tmp.*"))  # nothing half-written left behind


def test_a_directory_without_write_permission(fer_csv: Path, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (the other tests simulate it)")
        with caplog.at_level(logging.WARNING):
            arrays = load_fer2013(fer_csv, cache_dir=cache)
    finally:
        cache.chmod(0o755)
    assert_decoded_in_memory(arrays, fer_csv, caplog, cache)


def test_an_image_folder_with_an_unwritable_cache(tmp_path: Path, caplog) -> None:
    write_images(tmp_path / "data" / "a", 3)
    (tmp_path / "cache").write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path / "data", ["a"], 1, 48, cache_dir=tmp_path / "cache")
    assert data.images.shape == (3, 48, 48)
    assert "paths.cache_dir" in caplog.text

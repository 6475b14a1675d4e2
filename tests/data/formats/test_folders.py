"""Image-folder formats: Kaggle's FER2013 folders and any class tree; the facts read from a tree; bad input; cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_lightning.data.formats import folders
from fer_lightning.data.formats.fer2013 import FER2013_CLASSES, DataFormatError
from fer_lightning.data.formats.folders import image_folder_info, load_image_folder
from tests.data.conftest import write_images, write_kaggle_folders

CARTOON = [f"character_{i:02d}" for i in range(14)]


def cartoon_tree(root: Path, per_class: int = 4) -> Path:
    for i, name in enumerate(CARTOON):
        write_images(root / name, per_class, size=64, channels=3, ext=".jpg", seed=i)
    return root


def test_kaggle_folders_split_by_file_name_prefix(tmp_path: Path) -> None:
    root = write_kaggle_folders(tmp_path / "fer2013", per_class=2)
    data = load_image_folder(root, list(FER2013_CLASSES), 1, 48, usage_prefixes=True)
    assert data.images.shape == (7 * 8, 48, 48)
    assert data.images.dtype == np.uint8
    assert np.bincount(data.split).tolist() == [28, 14, 14]  # Training_ / PublicTest_ / PrivateTest_
    assert np.bincount(data.labels).tolist() == [8] * 7
    first = sorted((root / "test" / "angry").iterdir())[0]  # split folders in name order: test, train
    assert np.array_equal(data.images[0], cv2.imread(str(first), cv2.IMREAD_GRAYSCALE))  # PNG: lossless


def test_kaggle_folders_without_prefixes_split_by_folder(tmp_path: Path) -> None:
    root = write_kaggle_folders(tmp_path / "fer2013", per_class=2, prefixes=False)
    data = load_image_folder(root, list(FER2013_CLASSES), 1, 48, usage_prefixes=True)
    assert sorted(set(data.split.tolist())) == [0, 2]  # val is carved from train by the DataModule


def test_class_folders_map_to_the_configured_order(tmp_path: Path) -> None:
    write_images(tmp_path / "Neutral", 2)  # case-insensitive, in data.class_names order (neutral = 6)
    write_images(tmp_path / "angry", 1)
    data = load_image_folder(tmp_path, list(FER2013_CLASSES), 1, 48)
    assert sorted(data.labels.tolist()) == [0, 6, 6]
    assert (data.split == -1).all()


def test_image_folder_facts_are_read_from_the_data(tmp_path: Path) -> None:
    info = image_folder_info(cartoon_tree(tmp_path / "cartoons"))
    assert info == {"num_classes": 14, "class_names": CARTOON, "in_chans": 3, "image_size": 64}
    data = load_image_folder(tmp_path / "cartoons", CARTOON, 3, 64)
    assert data.images.shape == (56, 64, 64, 3)


def test_rgb_files_of_gray_pictures_are_gray(tmp_path: Path) -> None:
    for name in ("a", "b"):
        gray = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "x.jpg"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert image_folder_info(tmp_path) | {"class_names": None} == {
        "num_classes": 2, "class_names": None, "in_chans": 1, "image_size": 32
    }  # fmt: skip


def test_images_of_other_sizes_are_resized(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2, size=64)
    write_images(tmp_path / "b", 1, size=30)
    data = load_image_folder(tmp_path, ["a", "b"], 1, 48)
    assert data.images.shape == (3, 48, 48)


def test_split_folders_are_used(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for name in ("cat", "dog"):
            write_images(tmp_path / split / name, count)
    data = load_image_folder(tmp_path, ["cat", "dog"], 1, 48)
    assert np.bincount(data.split).tolist() == [6, 4, 2]


def test_unknown_folder_beside_train_is_an_error(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "cat", 1)
    write_images(tmp_path / "extra" / "cat", 1)
    with pytest.raises(DataFormatError, match=r"every folder beside it must be a split .* found \['extra'\]"):
        load_image_folder(tmp_path, ["cat"], 1, 48)


def test_unknown_class_folder_is_named(tmp_path: Path) -> None:
    root = write_kaggle_folders(tmp_path / "fer2013", per_class=1)
    write_images(root / "train" / "contempt", 1)
    with pytest.raises(DataFormatError, match=r"train/contempt: class folder 'contempt' is not one of the classes"):
        load_image_folder(root, list(FER2013_CLASSES), 1, 48)


def test_unreadable_file_is_an_error_or_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b", 2)
    broken = tmp_path / "b" / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="on_bad_rows=skip") as error:
        load_image_folder(tmp_path, ["a", "b"], 1, 48)
    assert f"{broken}: unreadable image file" in str(error.value)
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, ["a", "b"], 1, 48, on_bad_rows="skip")
    assert len(data.labels) == 4
    assert data.skipped == [f"{broken}: unreadable image file (expected an image OpenCV can decode: "
                            f"{', '.join(folders.IMAGE_EXTENSIONS)})"]  # fmt: skip
    assert "skipped 1 bad files or folders" in caplog.text


def test_empty_class_folder_is_an_error_or_skipped(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b", 2)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("not an image")
    assert image_folder_info(tmp_path)["class_names"] == ["a", "b"]  # an empty folder is no class
    with pytest.raises(DataFormatError, match=r"/c: empty class folder \(expected image files"):
        load_image_folder(tmp_path, ["a", "b"], 1, 48)
    data = load_image_folder(tmp_path, ["a", "b"], 1, 48, on_bad_rows="skip")
    assert len(data.labels) == 4
    assert "empty class folder" in data.skipped[0]


def test_non_image_files_are_ignored_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "labels.csv").write_text("x")
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, ["a"], 1, 48)
    assert len(data.labels) == 2
    assert "ignored 1 files that are not images" in caplog.text


def test_missing_root_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a directory root/<class>/<image>"):
        image_folder_info(tmp_path / "nowhere")


def test_cache_is_reused_and_follows_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "data" / "a", 3)
    first = load_image_folder(tmp_path / "data", ["a"], 1, 48, cache_dir=tmp_path / "cache")
    decode = folders.decode_files
    monkeypatch.setattr(folders, "decode_files", lambda *a: pytest.fail("the cached tree was decoded again"))
    second = load_image_folder(tmp_path / "data", ["a"], 1, 48, cache_dir=tmp_path / "cache")
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images)
    monkeypatch.setattr(folders, "decode_files", decode)
    changed = sorted((tmp_path / "data" / "a").iterdir())[0]
    cv2.imwrite(str(changed), np.zeros((48, 48), np.uint8))
    os.utime(changed, ns=(1, 1))  # a new listing (mtime) must not reuse the entry
    assert load_image_folder(tmp_path / "data", ["a"], 1, 48, cache_dir=tmp_path / "cache").images[0].max() == 0

"""fer-show-aug: the augmentation preview grid, through both data paths."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_lightning.data.device_aug import BatchAugment
from fer_lightning.tools.show_aug import augmented_grid, device_grid, pick_rows, run, write_aug_grid
from tests.conftest import compose_train


def test_show_aug_writes_a_grid_of_augmented_training_images(fer_csv: Path, tmp_path: Path) -> None:
    cfg = compose_train(["aug=heavy", f"data.path={fer_csv}", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    out = write_aug_grid(cfg, tmp_path / "run" / "aug.png", num=5)
    image = cv2.imread(str(out))
    assert image is not None
    assert image.shape[0] > 300
    assert image.shape[1] > 2 * 400  # two panels: the workers' albumentations and the device path


def test_the_command_takes_its_options_and_the_train_config_overrides(fer_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    argv = ["--num", "2", "aug=light", "--images", "3", f"data.path={fer_csv}", f"paths.cache_dir={tmp_path / 'c'}"]
    assert run([*argv, "--no-compare-device", "--out", str(out)]) == out
    one_panel = cv2.imread(str(out))
    assert one_panel.shape[1] < cv2.imread(str(run([*argv, "--out", str(tmp_path / "two.png")]))).shape[1]


def test_grid_rows_hold_the_stored_image_then_draws_of_the_stored_size() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    crop = lambda image: {"image": image[:40, :40]}  # noqa: E731 (a transform that crops, like aug=heavy)
    rows = augmented_grid(images, crop, num=3, seed=0)
    assert len(rows) == 2
    assert len(rows[0]) == 4
    assert np.array_equal(rows[0][0], images[0])
    assert all(cell.shape == (48, 48) for cell in rows[1])  # crops centred on a cell of the stored size
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    assert sorted(labels[pick_rows(labels, 3, seed=0)].tolist()) == [0, 1, 2]  # one of every class first


def test_device_grid_rows_hold_the_stored_image_then_device_draws() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    rows = device_grid(images, BatchAugment(flip_p=1.0, crop_size=40), num=3, seed=0)
    assert len(rows) == 2
    assert len(rows[0]) == 4
    assert np.array_equal(rows[0][0], images[0])
    assert all(cell.shape == (48, 48) and cell.dtype == np.uint8 for cell in rows[1])
    mirrored = torch.from_numpy(images[1]).flip(-1).numpy()
    windows = [mirrored[t : t + 40, x : x + 40] for t in range(9) for x in range(9)]
    assert any(np.array_equal(rows[1][1][4:44, 4:44], window) for window in windows)  # a mirrored 40x40 crop
    assert np.array_equal(device_grid(images, None, num=2, seed=0)[0][1], images[0])  # no device node: as stored


def test_without_the_data_it_says_where_to_get_it_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """README's command on a fresh clone: the data-not-found message, no traceback, exit status 2."""
    from fer_lightning.tools.show_aug import main

    missing = tmp_path / "fer2013.csv"
    with pytest.raises(SystemExit) as stop:
        main(["aug=heavy", f"data.path={missing}", "--out", str(tmp_path / "grid.png")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: FER2013 data not found at {missing}" in err
    assert "add data=synthetic" in err
    assert not (tmp_path / "grid.png").exists()

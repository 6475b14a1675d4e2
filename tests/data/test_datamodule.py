"""Every format through the one DataModule (`data=...` configs), split options, balance, blank images, runs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from hydra.errors import InstantiationException

from fer_lightning.data.datamodule import FERDataModule, relabel
from fer_lightning.data.formats.fer2013 import DataFormatError
from fer_lightning.errors import UserError
from tests.conftest import compose_train, write_fer_csv
from tests.data.conftest import FER_FOLDER_NAMES, write_images, write_kaggle_folders, write_votes_csv
from tests.data.formats.test_ferplus import VOTES

ROOT = Path(__file__).resolve().parents[2]
SPLIT_COUNTS = {"Training": 14, "PublicTest": 7, "PrivateTest": 7}


def datamodule(tmp_path: Path, overrides: list[str]) -> FERDataModule:
    cfg = compose_train([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def split_sizes(dm: FERDataModule) -> list[int]:
    return [len(dm.splits[name][1]) for name in ("train", "val", "test")]


def ferplus_files(tmp_path: Path) -> tuple[Path, Path]:
    fer = write_fer_csv(tmp_path / "fer2013.csv", SPLIT_COUNTS)
    usage = [u for u, n in SPLIT_COUNTS.items() for _ in range(n)]
    return fer, write_votes_csv(tmp_path / "fer2013new.csv", VOTES * 4, usage)


def test_fer2013_csv(fer_csv: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "aug=heavy", "tta=tencrop"])
    assert split_sizes(dm) == [42, 14, 14]
    image, label = dm.dataset("train")[0]
    assert image.shape == (1, 40, 40)
    assert image.dtype == torch.uint8
    assert isinstance(label, int)
    views, _ = dm.dataset("val")[0]
    assert views.shape == (10, 1, 40, 40)
    train_pixels = dm.splits["train"][0]
    assert dm.preprocessing["mean"] == pytest.approx(train_pixels.mean() / 255)  # from the train split only
    assert dm.preprocessing["std"] == pytest.approx(train_pixels.std() / 255)


@pytest.mark.parametrize("mode", ["majority", "probability"])
def test_ferplus(tmp_path: Path, mode: str) -> None:
    fer, votes = ferplus_files(tmp_path)
    dm = datamodule(
        tmp_path, ["data=ferplus", f"data.path={fer}", f"data.votes_path={votes}", f"data.label_mode={mode}"]
    )
    assert dm.num_classes == 8
    assert dm.class_names[-1] == "contempt"
    image, target = dm.dataset("train")[0]
    assert image.shape == (1, 48, 48)
    if mode == "majority":
        assert split_sizes(dm) == [6, 3, 3]  # rows 1, 5, 6 of every 7 (see test_ferplus.VOTES)
        assert isinstance(target, int)
    else:
        assert split_sizes(dm) == [10, 5, 5]
        assert target.dtype == torch.float32
        assert target.shape == (8,)
        assert target.sum().item() == pytest.approx(1.0)


def test_ferplus_votes_missing_says_where_to_get_them(fer_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="microsoft/FERPlus"):
        datamodule(tmp_path, ["data=ferplus", f"data.path={fer_csv}", f"data.votes_path={tmp_path / 'none.csv'}"])


def test_fer2013_folders(tmp_path: Path) -> None:
    root = write_kaggle_folders(tmp_path / "fer2013", per_class=2)
    dm = datamodule(tmp_path, ["data=fer2013_folders", f"data.path={root}"])
    assert split_sizes(dm) == [28, 14, 14]  # Training_ / PublicTest_ / PrivateTest_ file names


def test_fer2013_folders_without_prefixes_carve_val_from_train(tmp_path: Path) -> None:
    root = write_kaggle_folders(tmp_path / "fer2013", per_class=5, prefixes=False)
    dm = datamodule(tmp_path, ["data=fer2013_folders", f"data.path={root}"])
    assert split_sizes(dm) == [63, 7, 35]  # one of every 10 train images per class (rounded) goes to val


def cartoon_tree(root: Path) -> Path:
    for i in range(14):
        write_images(root / f"character_{i:02d}", 6, size=64, channels=3, ext=".jpg", seed=i)
    return root


def test_image_folder_reads_classes_channels_and_size(tmp_path: Path) -> None:
    root = cartoon_tree(tmp_path / "cartoons")
    cfg = compose_train(["data=image_folder", f"data.path={root}"], tmp_path)
    assert (cfg.data.num_classes, cfg.data.in_chans, cfg.data.image_size) == (14, 3, 64)
    assert cfg.model.num_classes == cfg.module.num_classes == 14
    assert cfg.model.in_chans == 3
    dm = datamodule(tmp_path, ["data=image_folder", f"data.path={root}", "aug=light"])
    assert sum(split_sizes(dm)) == 84
    assert min(split_sizes(dm)) > 0
    image, label = dm.dataset("train")[0]
    assert image.shape == (3, 64, 64)
    assert image.dtype == torch.uint8
    assert 0 <= label < 14


def test_image_folder_facts_can_be_overridden(tmp_path: Path) -> None:
    root = cartoon_tree(tmp_path / "cartoons")
    dm = datamodule(tmp_path, ["data=image_folder", f"data.path={root}", "data.in_chans=1", "data.image_size=48"])
    assert dm.dataset("train")[0][0].shape == (1, 48, 48)


def test_stratified_resplit_is_seeded(fer_csv: Path, tmp_path: Path) -> None:
    options = [f"data.path={fer_csv}", "data.split=stratified", "data.split_fractions=[0.6,0.2,0.2]"]
    first = datamodule(tmp_path, options)
    assert split_sizes(first) == [42, 14, 14]  # 10 per class: 6 / 2 / 2
    again = datamodule(tmp_path, options)
    other = datamodule(tmp_path, [*options, "data.split_seed=1"])
    assert np.array_equal(first.splits["val"][0], again.splits["val"][0])
    assert not np.array_equal(first.splits["val"][0], other.splits["val"][0])


def with_blank_rows(path: Path) -> Path:
    lines = path.read_text().splitlines()
    for line in (2, 45):  # a Training and a PublicTest row (lines 2-43 are Training)
        emotion, _, usage = lines[line - 1].split(",")
        lines[line - 1] = ",".join([emotion, " ".join(["0"] * 2304), usage])
    path.write_text("\n".join(lines) + "\n")
    return path


def test_blank_images_are_kept_unless_dropped(fer_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with_blank_rows(fer_csv)
    assert split_sizes(datamodule(tmp_path, [f"data.path={fer_csv}"])) == [42, 14, 14]
    with caplog.at_level(logging.INFO):
        dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.drop_blank=true"])
    assert split_sizes(dm) == [41, 13, 14]
    assert "dropped 2 blank" in caplog.text


def test_bad_rows_stop_or_are_skipped_and_exposed(fer_csv: Path, tmp_path: Path) -> None:
    lines = fer_csv.read_text().splitlines()
    lines[9] = "3,1 2 3,Training"
    fer_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"line 10: expected 2304 pixels"):
        datamodule(tmp_path, [f"data.path={fer_csv}"])
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.on_bad_rows=skip"])
    assert split_sizes(dm) == [41, 14, 14]
    assert dm.skipped_rows == [f"{fer_csv}, line 10: expected 2304 pixels (48x48), got 3"]


def test_balance_options(fer_csv: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.balance=weighted_loss"])
    torch.testing.assert_close(dm.class_weights, torch.ones(7))  # 6 of every class in Training
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.balance=weighted_sampler", "data.loader=workers"])
    # the workers path draws the same seeded, resumable order as the device path: with replacement, by weight
    assert dm.train_dataloader().sampler.permutation.weights is not None
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.balance=weighted_sampler", "data.loader=device"])
    assert dm.train_dataloader().sampler.weights is not None  # the device path's draws with replacement
    with pytest.raises(InstantiationException, match="data.balance must be one of"):
        datamodule(tmp_path, [f"data.path={fer_csv}", "data.balance=oversample"])


def test_ferplus_soft_labels_train_with_mixup_and_class_weights(tmp_path: Path) -> None:
    fer, votes = ferplus_files(tmp_path)
    overrides = [
        "data=ferplus", f"data.path={fer}", f"data.votes_path={votes}", "data.label_mode=probability",
        "data.balance=weighted_loss", "module.mixup_alpha=0.2", "module.cutmix_alpha=1.0", "aug=heavy",
        "tta=tencrop", "model=simple_cnn", "data.num_workers=0", "data.batch_size=4",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    cfg = compose_train(overrides, tmp_path)
    dm, net = hydra.utils.instantiate(cfg.data), hydra.utils.instantiate(cfg.model)
    module = hydra.utils.instantiate(cfg.module, net=net, model_config={"name": cfg.model.name})
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "val/acc" in trainer.callback_metrics
    torch.testing.assert_close(module.class_weights, dm.class_weights)  # taken from the data in setup
    stored = module.hparams["preprocessing"]  # what every checkpoint of the run carries
    assert stored["mean"] == pytest.approx(dm.splits["train"][0].mean() / 255)  # from the train split
    assert stored["class_names"][-1] == "contempt"
    assert module.input_mean.item() == pytest.approx(stored["mean"])


def test_train_script_runs_on_an_image_folder(tmp_path: Path) -> None:
    root = cartoon_tree(tmp_path / "cartoons")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "data=image_folder", f"data.path={root}", "debug=fast_dev_run",
         "model=simple_cnn", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final metrics" in result.stdout
    resolved = yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text())
    assert resolved["data"]["num_classes"] == resolved["model"]["num_classes"] == 14
    assert resolved["data"]["in_chans"] == 3
    assert resolved["data"]["image_size"] == 64


@pytest.mark.real_data
def test_real_fer2013_through_the_datamodule(real_fer2013: Path, real_cache: Path) -> None:
    dm = FERDataModule(path=str(real_fer2013), cache_dir=str(real_cache), num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert split_sizes(dm) == [28709, 3589, 3589]
    assert dm.splits["train"][0].dtype == np.uint8
    assert not isinstance(dm.splits["train"][0], np.memmap)
    dropped = FERDataModule(path=str(real_fer2013), cache_dir=str(real_cache), num_workers=0, drop_blank=True)
    dropped.setup("fit")
    assert split_sizes(dropped) == [28698, 3588, 3589]  # README: 12 black rows, 11 in Training, 1 in PublicTest


@pytest.mark.parametrize("loader", ["workers", "device"])
def test_training_drops_the_short_last_batch_and_evaluation_sees_every_image(tmp_path: Path, loader: str) -> None:
    # 42 training images in batches of 16: 2 full batches, the short one of 10 left out (each epoch another 10)
    csv = write_fer_csv(tmp_path / "fer.csv", {"Training": 42, "PublicTest": 14, "PrivateTest": 14})
    overrides = [f"data.path={csv}", f"data.loader={loader}", "data.batch_size=16", "data.eval_batch_size=8"]
    dm = datamodule(tmp_path, [*overrides, "data.num_workers=0"])
    train = dm.dataloader("train")
    assert len(train) == 2
    assert [len(targets) for _, targets in train] == [16, 16]
    assert sum(len(targets) for _, targets in dm.dataloader("val")) == 14


def test_a_train_split_smaller_than_one_batch_keeps_its_batch(fer_csv: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, [f"data.path={fer_csv}", "data.loader=device", "data.batch_size=64"])
    assert [len(targets) for _, targets in dm.dataloader("train")] == [42]


def test_order_classes_as_relabels_by_name_before_or_after_setup(fer_csv: Path, tmp_path: Path) -> None:
    reordered = [*FER_FOLDER_NAMES[1:], FER_FOLDER_NAMES[0].upper()]  # angry last, matched case-insensitively
    after = datamodule(tmp_path, [f"data.path={fer_csv}", "data.balance=weighted_loss"])
    labels, weights = after.splits["test"][1].copy(), after.class_weights.clone()
    after.order_classes_as(reordered)
    assert after.class_names == tuple(reordered)
    assert after.splits["test"][1].tolist() == ((labels - 1) % 7).tolist()  # angry (0) -> 6, disgust (1) -> 0, ...
    assert after.class_weights.tolist() == [*weights[1:].tolist(), weights[0].item()]
    before = hydra.utils.instantiate(compose_train([f"data.path={fer_csv}"], tmp_path).data)
    before.order_classes_as(reordered)
    before.setup("test")
    assert before.splits["test"][1].tolist() == after.splits["test"][1].tolist()
    with pytest.raises(UserError, match=r"cannot be ordered as \['a', 'b'"):
        before.order_classes_as(["a", "b", "c", "d", "e", "f", "g"])


def test_relabel_moves_a_soft_targets_columns_with_their_classes() -> None:
    soft = np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]], dtype=np.float32)
    moved = relabel(soft, np.array([2, 0, 1]))
    np.testing.assert_array_equal(moved, np.array([[0.3, 0.2, 0.5], [0.0, 1.0, 0.0]], dtype=np.float32))
    assert relabel(np.array([0, 1, 2]), np.array([2, 0, 1])).tolist() == [2, 0, 1]

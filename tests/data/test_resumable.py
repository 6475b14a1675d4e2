"""Seeded training loaders (issue 16): two runs with one seed augment alike on every data path, whatever the worker
count, and a loader resumed mid-epoch gives the rest of the epoch an uninterrupted one would have given."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from fer_lightning.checkpoint import read_checkpoint
from fer_lightning.training import run_training
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "fer.csv"
    return write_fer_csv(path, {"Training": 32, "PublicTest": 8, "PrivateTest": 8})


def datamodule(csv: Path, tmp_path: Path, *overrides: str, seed: int = 3):
    cfg = compose_train([f"data.path={csv}", "data.batch_size=8", f"seed={seed}", *overrides], tmp_path)
    L.seed_everything(seed, workers=True)  # as run_training does
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    return data


def epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)  # what Lightning calls every epoch
    return [images.clone() for images, _ in loader]


PATHS = {
    "light-workers0": ("aug=light", "data.loader=workers", "data.num_workers=0"),
    "heavy-workers0": ("aug=heavy", "data.loader=workers", "data.num_workers=0"),
    "heavy-workers2": ("aug=heavy", "data.loader=workers", "data.num_workers=2"),
    "heavy-weighted": ("aug=heavy", "data.loader=workers", "data.num_workers=0", "data.balance=weighted_sampler"),
    "heavy-device": ("aug=heavy", "data.loader=device"),
}


@pytest.mark.parametrize("overrides", PATHS.values(), ids=PATHS.keys())
def test_two_datamodules_with_one_seed_augment_alike(small_csv: Path, tmp_path: Path, overrides) -> None:
    first = datamodule(small_csv, tmp_path / "a", *overrides).train_dataloader()
    second = datamodule(small_csv, tmp_path / "b", *overrides).train_dataloader()
    for epoch in (0, 1):
        batches, again = epoch_batches(first, epoch), epoch_batches(second, epoch)
        assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True)), epoch
    other_seed = datamodule(small_csv, tmp_path / "c", *overrides, seed=4).train_dataloader()
    assert not torch.equal(epoch_batches(other_seed, 1)[0], batches[0])


def test_the_worker_count_does_not_change_the_augmentation(small_csv: Path, tmp_path: Path) -> None:
    in_process = datamodule(small_csv, tmp_path / "a", "aug=heavy", "data.loader=workers", "data.num_workers=0")
    workers = datamodule(small_csv, tmp_path / "b", "aug=heavy", "data.loader=workers", "data.num_workers=2")
    batches = epoch_batches(in_process.train_dataloader(), 1)
    again = epoch_batches(workers.train_dataloader(), 1)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize("overrides", [PATHS["heavy-workers2"], PATHS["heavy-device"]], ids=["workers", "device"])
def test_a_loader_resumed_mid_epoch_gives_the_rest_of_that_epoch(small_csv: Path, tmp_path: Path, overrides) -> None:
    uninterrupted = epoch_batches(datamodule(small_csv, tmp_path / "a", *overrides).train_dataloader(), 1)
    interrupted = datamodule(small_csv, tmp_path / "b", *overrides)
    interrupted.train_progress = lambda: (1, False)  # the trainer's count: 1 batch of epoch 1 run
    loader = interrupted.train_dataloader()
    loader.sampler.set_epoch(1)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 1, "epoch_finished": False}

    resumed = datamodule(small_csv, tmp_path / "c", *overrides).train_dataloader()  # a new process's loader
    resumed.load_state_dict(state)  # before its first iteration, as Lightning does
    rest = [images for images, _ in resumed]
    assert len(rest) == len(uninterrupted) - 1
    assert all(torch.equal(a, b) for a, b in zip(rest, uninterrupted[1:], strict=True))
    assert len([images for images, _ in resumed]) == len(uninterrupted)  # the next epoch is whole again


def test_a_loader_saved_at_an_epoch_end_resumes_with_the_next_epoch(small_csv: Path, tmp_path: Path) -> None:
    overrides = PATHS["heavy-workers0"]
    next_epoch = epoch_batches(datamodule(small_csv, tmp_path / "a", *overrides).train_dataloader(), 2)
    resumed = datamodule(small_csv, tmp_path / "b", *overrides).train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches_done": 4, "epoch_finished": True})
    assert all(torch.equal(a, b) for (a, _), b in zip(resumed, next_epoch, strict=True))


@pytest.fixture
def restore_determinism():
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)


def seeded_run(csv: Path, run_dir: Path, *extra: str) -> tuple[dict, dict]:
    overrides = [
        f"data.path={csv}",
        "model=tiny_xception",
        "data.batch_size=8",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "speed.autotune=false",
        "logger=none",
        "callbacks.model_checkpoint.monitor=null",
        "seed=3",
        *extra,
    ]
    metrics = run_training(compose_train(overrides, run_dir))
    weights = read_checkpoint(run_dir / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    return metrics, weights


@pytest.mark.usefixtures("one_thread", "restore_determinism")
def test_two_seeded_runs_with_heavy_augmentation_in_workers_are_identical(small_csv: Path, tmp_path: Path) -> None:
    first, first_weights = seeded_run(small_csv, tmp_path / "a", *PATHS["heavy-workers2"])
    second, second_weights = seeded_run(small_csv, tmp_path / "b", *PATHS["heavy-workers2"])
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
        assert second[key] == first[key], key
    for name, weight in first_weights.items():
        assert torch.equal(weight, second_weights[name]), name

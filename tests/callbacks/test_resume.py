"""Interrupt (SIGTERM, Ctrl-C) -> checkpoint -> `ckpt_path=` resume, ending where an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import random
import signal
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from fer_lightning.callbacks.resume import RNGStateCheckpoint, collect_rng_states, set_rng_states
from fer_lightning.checkpoint import read_checkpoint
from fer_lightning.training import run_training
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import finish_script, one_thread, script_env, start_script  # noqa: F401 (fixture)

COMPARED = ("val/acc", "val/loss", "val/f1_macro", "val/acc_best", "test/acc", "test/loss", "test/f1_macro", "epochs")


class SigtermAtEpochEnd(L.Callback):
    """Sends this process a real SIGTERM at the end of epoch `epoch`, as a cluster's pre-emption would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


class InterruptAtBatch(L.Callback):
    """Ctrl-C (KeyboardInterrupt) in the middle of the first epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 1:
            raise KeyboardInterrupt


class SigintMidStep(L.Callback):
    """A real Ctrl-C (SIGINT to this process) between a step's backward and its optimizer step, at global step
    `step`: where Python's KeyboardInterrupt would stop it half done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class SlowBatches(L.Callback):
    """Marks the first batch with a file, then slows training down so that a signal lands mid-epoch."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.marker.touch()
        time.sleep(0.5)


@pytest.fixture
def restore_global_state():
    """Lightning leaves deterministic algorithms on, and ignores SIGINT after a Ctrl-C: undo both."""
    deterministic, sigint = torch.are_deterministic_algorithms_enabled(), signal.getsignal(signal.SIGINT)
    yield
    torch.use_deterministic_algorithms(deterministic)
    signal.signal(signal.SIGINT, sigint)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    # 4 training batches of 8 per epoch; no augmentation, so the only randomness is the torch RNG's
    return write_fer_csv(tmp_path / "fer.csv", {"Training": 32, "PublicTest": 16, "PrivateTest": 16})


def overrides(csv: Path, *extra: str) -> list[str]:
    return [
        f"data.path={csv}",
        "model=tiny_xception",
        "aug=none",
        "data.num_workers=0",
        "data.batch_size=8",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        # two separate runs are compared: the autotune could time them into different precisions, so pin one
        "speed.autotune=false",
        *(() if any(e.startswith("logger=") for e in extra) else ("logger=none",)),
        # the last epoch is the one validated and tested: the compared metrics depend on the resumed epoch
        "callbacks.model_checkpoint.monitor=null",
        *extra,
    ]


@pytest.mark.usefixtures("one_thread", "restore_global_state")
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(tiny_csv: Path, tmp_path: Path) -> None:
    uninterrupted = run_training(compose_train(overrides(tiny_csv), tmp_path / "a"))

    stop = ["+callbacks.sigterm._target_=tests.callbacks.test_resume.SigtermAtEpochEnd", "+callbacks.sigterm.epoch=1"]
    interrupted_cfg = compose_train(overrides(tiny_csv, *stop), tmp_path / "b")
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException, after the checkpoint is written
        run_training(interrupted_cfg)
    checkpoint = Path(interrupted_cfg.paths.output_dir) / "checkpoints" / "interrupted.ckpt"
    saved = read_checkpoint(checkpoint)  # weights_only=True: the RNG states are plain tensors and tuples
    assert (saved["epoch"], saved["global_step"]) == (2, 8)  # epochs 0 and 1 done, 4 steps each
    assert "rng_states" in saved
    assert not (Path(interrupted_cfg.paths.output_dir) / "metrics.json").exists()

    # in the interrupted run's directory, as the resume hint says: ModelCheckpoint keeps its best-so-far
    resumed = run_training(compose_train(overrides(tiny_csv, f"ckpt_path={checkpoint}"), tmp_path / "b"))
    for key in COMPARED:
        assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6), key
    final = [read_checkpoint(tmp_path / run / "run" / "checkpoints" / "last.ckpt") for run in ("a", "b")]
    assert final[1]["global_step"] == final[0]["global_step"] == 12  # saved at the end of the last epoch
    for name, weight in final[0]["state_dict"].items():
        assert torch.equal(weight, final[1]["state_dict"][name]), name


def batches_that_stepped(checkpoint: dict) -> int:
    return checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]


@pytest.mark.usefixtures("one_thread", "restore_global_state")
@pytest.mark.parametrize("loader", [("data.loader=workers", "data.num_workers=2"), ("data.loader=device",)])
def test_ctrl_c_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tiny_csv: Path, tmp_path: Path, loader) -> None:
    """Issue 16: with augmentation, stopped in the middle of epoch 1's second step by a real SIGINT."""
    run = [*loader, "aug=heavy", "trainer.max_epochs=2", "logger=csv"]
    uninterrupted = run_training(compose_train(overrides(tiny_csv, *run), tmp_path / "a"))

    stop = ["+callbacks.sigint._target_=tests.callbacks.test_resume.SigintMidStep", "+callbacks.sigint.step=5"]
    interrupted_cfg = compose_train(overrides(tiny_csv, *run, *stop), tmp_path / "b")
    with pytest.raises(SystemExit) as exit_info:
        run_training(interrupted_cfg)
    assert exit_info.value.code == 130  # a shell's Ctrl-C status
    checkpoint = Path(interrupted_cfg.paths.output_dir) / "checkpoints" / "interrupted.ckpt"
    saved = read_checkpoint(checkpoint)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)  # the step under way finished: mid-epoch 1

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dataloader is not resumable", category=PossibleUserWarning)
        resumed = run_training(compose_train(overrides(tiny_csv, *run, f"ckpt_path={checkpoint}"), tmp_path / "b"))
    for key in COMPARED:
        assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6), key
    final = [read_checkpoint(tmp_path / run / "run" / "checkpoints" / "last.ckpt") for run in ("a", "b")]
    assert final[1]["global_step"] == final[0]["global_step"] == 8
    assert batches_that_stepped(final[1]) == batches_that_stepped(final[0])  # the loggers' step, one ahead before
    for name, weight in final[0]["state_dict"].items():
        assert torch.equal(weight, final[1]["state_dict"][name]), name
    curves = [epoch_rows(tmp_path / run / "run" / "csv" / "metrics.csv") for run in ("a", "b")]
    assert len(curves[0]) >= 2
    for key in ("step", "train/lr", "val/acc", "val/acc_best"):  # the resumed epoch's lr was empty before
        assert [row[key] for row in curves[1]] == [row[key] for row in curves[0]], key


def epoch_rows(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open() as file:
        return [row for row in csv.DictReader(file) if row.get("train/lr") or row.get("val/acc")]


@pytest.mark.usefixtures("one_thread", "restore_global_state")
def test_ctrl_c_saves_a_checkpoint_that_resumes(tiny_csv: Path, tmp_path: Path) -> None:
    interrupt = ["+callbacks.interrupt._target_=tests.callbacks.test_resume.InterruptAtBatch"]
    cfg = compose_train(overrides(tiny_csv, *interrupt, "trainer.max_epochs=1"), tmp_path / "a")
    with pytest.raises(SystemExit) as exit_info:
        run_training(cfg)
    assert exit_info.value.code == 1
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "interrupted.ckpt"
    assert read_checkpoint(checkpoint)["global_step"] == 2  # stopped after the second batch of epoch 0

    resume = overrides(tiny_csv, f"ckpt_path={checkpoint}", "trainer.max_epochs=1")
    resumed = run_training(compose_train(resume, tmp_path / "b"))
    assert resumed["epochs"] == 1
    assert 0.0 <= resumed["test/acc"] <= 1.0


def test_external_sigterm_mid_epoch_saves_and_exits_cleanly(tiny_csv: Path, tmp_path: Path) -> None:
    marker = tmp_path / "training_started"
    slow = ["+callbacks.slow._target_=tests.callbacks.test_resume.SlowBatches", f"+callbacks.slow.marker={marker}"]
    args = [*overrides(tiny_csv, *slow), "trainer.deterministic=false", f"hydra.run.dir={tmp_path}/run"]
    process = start_script("train.py", *args, cwd=tmp_path, env=script_env(tmp_path))
    deadline = time.time() + 60
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    result = finish_script(process, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    saved = read_checkpoint(checkpoint)
    assert saved["epoch"] == 0
    assert 1 <= saved["global_step"] < 4  # mid-epoch
    assert f"ckpt_path={checkpoint} hydra.run.dir={tmp_path / 'run'}" in result.stdout + result.stderr


def test_rng_states_round_trip() -> None:
    states = collect_rng_states()
    expected = torch.rand(3), np.random.rand(3), random.random()
    set_rng_states(states)
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(expected[0], again[0])
    assert (expected[1] == again[1]).all()
    assert expected[2] == again[2]


def save_from_rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    """One gloo process: seed its own streams, save a checkpoint's RNG states as every rank does, and write down
    the numbers its streams give next."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(100 + rank)
        checkpoint: dict = {}
        RNGStateCheckpoint().on_save_checkpoint(None, None, checkpoint)
        if rank == 0:
            torch.save(checkpoint, Path(out) / "checkpoint.pt")
        torch.save(torch.rand(3), Path(out) / f"next_{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def resuming(rank: int, world_size: int) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), global_rank=rank, world_size=world_size)


def test_every_ddp_rank_resumes_its_own_random_streams(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(save_from_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["rng_states_per_rank"]) == 2
    for rank in (0, 1):
        torch.manual_seed(0)  # a fresh process's own seeding, replaced by the resume
        RNGStateCheckpoint().on_load_checkpoint(resuming(rank, 2), None, checkpoint)
        assert torch.equal(torch.rand(3), torch.load(tmp_path / f"next_{rank}.pt"))


def test_a_resume_with_another_process_count_keeps_the_other_ranks_own_seeding(tmp_path: Path) -> None:
    torch.manual_seed(100)
    checkpoint: dict = {}
    RNGStateCheckpoint().on_save_checkpoint(None, None, checkpoint)  # one process
    expected = torch.rand(3)
    torch.manual_seed(7)
    own = torch.rand(3)
    torch.manual_seed(7)
    RNGStateCheckpoint().on_load_checkpoint(resuming(1, 2), None, checkpoint)
    assert torch.equal(torch.rand(3), own)  # rank 1 of 2 is not given rank 0's streams
    RNGStateCheckpoint().on_load_checkpoint(resuming(0, 2), None, checkpoint)
    assert torch.equal(torch.rand(3), expected)

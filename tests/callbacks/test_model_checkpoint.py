"""`last.ckpt` at every epoch end whether or not the monitored metric improved, never at a mid-epoch stop."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from fer_lightning.callbacks import FERModelCheckpoint


class NeverImproves(BoringModel):
    """Logs the same score at every validation: only the first one is a new best."""

    def validation_step(self, batch, batch_idx):
        self.log("score", 1.0)
        return super().validation_step(batch, batch_idx)


class StopInEpoch(L.Callback):
    """Stops the fit after batch 1 of epoch `epoch`, as `max_time` or the training budget would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            trainer.should_stop = True


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)  # a file this test made: a BoringModel's


def fit(tmp_path: Path, *callbacks: L.Callback, **checkpoint_kwargs) -> Path:
    checkpoint = FERModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max", save_last=True, **checkpoint_kwargs)
    trainer = L.Trainer(
        max_epochs=3, limit_train_batches=4, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint, *callbacks],
    )  # fmt: skip
    trainer.fit(NeverImproves())
    return tmp_path


@pytest.mark.parametrize("on_train_epoch_end", [False, True])
def test_last_is_the_final_epoch_when_the_monitored_metric_stopped_improving(tmp_path, on_train_epoch_end) -> None:
    run = fit(tmp_path, save_on_train_epoch_end=on_train_epoch_end)
    best = [path.name for path in run.glob("*.ckpt") if path.name != "last.ckpt"]
    assert best == ["epoch=0-step=4.ckpt"]  # the one improvement: Lightning alone would leave last.ckpt there too
    last = read_checkpoint(run / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 12)


def test_a_stop_mid_epoch_leaves_last_at_the_previous_epoch_end(tmp_path) -> None:
    last = read_checkpoint(fit(tmp_path, StopInEpoch(epoch=1)) / "last.ckpt")
    assert last["global_step"] == 4  # epoch 0's end, not step 6 where epoch 1 was cut

"""Training time and images seen, logged beside every validation: the axes of a time-to-accuracy curve.

Why our own clock and not Lightning's `Timer`: the Timer exists only when `max_time` is set and counts the
validation loops that run inside the fit. Here the clock runs from the start of each training epoch to its end and
pauses for validation, so data loading is counted (waiting for workers, and `data.loader=device`'s augmentation,
which runs when the loop fetches a batch, before `on_train_batch_start`) and evaluation is not: the time a race
against another training loop is judged on (`fer_lightning.bench.time_to_accuracy`). Its state is in the
checkpoint, so a resumed run goes on counting where it stopped; so does the fit's wall-clock time
(`resumed_wall_s`: the earlier attempts' fit time up to the checkpoint, which metrics.json's `wall_time_s` adds).
With `budget_s` the fit stops after the batch that spends it (Lightning then validates once more), mid-epoch if
need be.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from fer_lightning.speed import synchronize

TRAIN_SECONDS, IMAGES_SEEN = "time/train_s", "time/images_seen"


class TrainingClock(L.Callback):
    """Logs `time/train_s` (seconds inside training epochs, this rank) and `time/images_seen` (training images of
    all ranks, Mixup counted once) at the end of every validation of the fit."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = math.inf if budget_s is None else float(budget_s)
        self.seconds, self.images = 0.0, 0
        self._start: float | None = None
        self.wall_before_s, self._fit_started = 0.0, time.time()  # wall time of the attempts before a resume
        self.resumed_wall_s = 0.0  # wall_before_s as the fit started: validate/test restore callbacks again

    def elapsed(self) -> float:
        return self.seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def _pause(self, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            synchronize(pl_module.device)  # a GPU's queued steps belong to the epoch
            self.seconds, self._start = self.elapsed(), None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started, self.resumed_wall_s = time.time(), self.wall_before_s

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        if self._start is None:  # after a validation inside the epoch (val_check_interval < 1)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        self.images += len(batch[0])
        if self.elapsed() >= self.budget_s:
            trainer.should_stop = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the fit's validations only, not run_training's re-validation of the selected checkpoint
        pl_module.log(TRAIN_SECONDS, self.seconds, on_epoch=True, reduce_fx="max", sync_dist=True)
        pl_module.log(IMAGES_SEEN, float(self.images), on_epoch=True, reduce_fx="sum", sync_dist=True)

    def state_dict(self) -> dict[str, float]:
        wall_s = self.wall_before_s + time.time() - self._fit_started
        return {"train_seconds": self.elapsed(), "images_seen": self.images, "wall_seconds": wall_s}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.seconds, self.images = float(state_dict["train_seconds"]), int(state_dict["images_seen"])
        self.wall_before_s = float(state_dict.get("wall_seconds", 0.0))  # checkpoints before this key: unknown

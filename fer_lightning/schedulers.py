"""Learning-rate scheduler configs: a torch scheduler plus Lightning's interval / frequency / monitor.

Every `conf/scheduler/*.yaml` is a partial of `build_lr_scheduler`, completed in `FERLitModule.configure_optimizers`
with the optimizer and the trainer. Schedulers whose length is a number of their own steps (`warmup_cosine`, or
torch's `OneCycleLR`) declare a `total_steps` argument and get it from the trainer: optimizer steps
(`trainer.estimated_stepping_batches`, which accounts for epochs, batch limits, gradient accumulation and devices)
for `interval: step`, epochs for `interval: epoch`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from fer_lightning.callbacks.training_clock import TrainingClock
from fer_lightning.errors import UserError

PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: Callable[..., object],
    interval: str = "epoch",
    frequency: int = 1,
    monitor: str = "val/acc",
    trainer: Any = None,
) -> dict:
    """Lightning's lr_scheduler dict; `monitor` is only used by schedulers that step on a metric (plateau)."""
    if interval not in ("epoch", "step"):
        raise UserError(f"scheduler.interval must be 'epoch' or 'step', got {interval!r}")
    if frequency < 1:
        raise UserError(f"scheduler.frequency must be >= 1, got {frequency}")
    kwargs = {}
    if wants_total_steps(scheduler):
        kwargs["total_steps"] = scheduler_steps(trainer, interval, frequency)
    if wants_argument(scheduler, "clock"):
        kwargs["clock"] = budget_clock(trainer)
    config = {"scheduler": scheduler(optimizer=optimizer, **kwargs), "interval": interval, "frequency": frequency}
    if isinstance(config["scheduler"], PLATEAU):
        check_plateau_mode(config["scheduler"], monitor)
        config["monitor"] = monitor
    return config


def wants_total_steps(scheduler: Callable[..., object]) -> bool:
    """True when the factory takes `total_steps` and the config did not set it."""
    return wants_argument(scheduler, "total_steps")


def wants_argument(scheduler: Callable[..., object], name: str) -> bool:
    """True when the factory takes `name` and the config did not set it (`name: null` means "from the trainer")."""
    if isinstance(scheduler, functools.partial) and name in scheduler.keywords:
        return scheduler.keywords[name] is None
    try:
        return name in inspect.signature(scheduler).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def budget_clock(trainer: Any) -> Any:
    """The run's TrainingClock with a training-time budget: what a time-budget schedule is a function of."""
    clocks = [c for c in getattr(trainer, "callbacks", []) if isinstance(c, TrainingClock)]
    if not clocks or math.isinf(clocks[0].budget_s):
        raise UserError(
            "scheduler=budget_cosine runs its schedule over a training-time budget: set "
            "callbacks.training_clock.budget_s (seconds of training; the fit stops when it is spent)"
        )
    if getattr(trainer, "world_size", 1) > 1:
        # each rank's clock reads its own time: learning rates would differ between the replicas of one model
        raise UserError("scheduler=budget_cosine is single-process; under DDP use scheduler=warmup_cosine")
    return clocks[0]


def scheduler_steps(trainer: Any, interval: str, frequency: int) -> int:
    """How many times Lightning will call `scheduler.step()` in this fit."""
    if trainer is None:
        raise UserError(
            "this scheduler needs the run's total number of steps, which comes from the trainer: call "
            "build_lr_scheduler(optimizer=..., trainer=trainer) (FERLitModule.configure_optimizers does)"
        )
    units = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    if units is None or units < 0 or math.isinf(units):
        raise UserError(
            f"a scheduler with total_steps needs a bounded run, but the trainer has no limit in {interval}s "
            "(set trainer.max_epochs or trainer.max_steps)"
        )
    return max(1, int(units) // frequency)


def check_plateau_mode(scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau, monitor: str) -> None:
    """A loss watched in `max` mode (or an accuracy in `min` mode) would cut the learning rate while all is well."""
    lower_is_better = "loss" in monitor.rsplit("/", 1)[-1]
    if scheduler.mode == ("max" if lower_is_better else "min"):
        wanted = "min" if lower_is_better else "max"
        raise UserError(
            f"scheduler.monitor={monitor} with scheduler.scheduler.mode={scheduler.mode}: a "
            f"{'loss' if lower_is_better else 'score'} improves the other way; set scheduler.scheduler.mode={wanted}"
        )


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the optimizer's learning rate, then a half cosine down to `min_lr_ratio` of it.

    The warmup lasts `warmup_steps` steps when given, else `warmup_fraction` of `total_steps` (rounded). A LambdaLR
    of a closed form rather than SequentialLR(LinearLR, CosineAnnealingLR): the rate at every step is exactly the
    formula (no accumulated recursion, no deprecated `step(epoch)` at the milestone), and the schedule is rebuilt
    from the config on resume instead of being restored from a pickled state.
    """
    if warmup_steps is None:
        if not 0.0 <= warmup_fraction <= 1.0:
            raise UserError(f"warmup_fraction must be within [0, 1], got {warmup_fraction}")
        warmup_steps = round(warmup_fraction * total_steps)
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise UserError(f"need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {warmup_steps}, {min_lr_ratio}")
    warmup_steps = min(warmup_steps, total_steps)
    factor = functools.partial(
        warmup_cosine_factor, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The multiplier of the base learning rate after `step` scheduler steps."""
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TimeBudgetCosine(torch.optim.lr_scheduler.LRScheduler):
    """`warmup_cosine` over seconds of training instead of steps: the rate after a fraction p of the run's
    training-time budget (`callbacks.training_clock.budget_s`) is the one warmup_cosine gives after a fraction p of
    its steps, so the schedule ends (at `min_lr_ratio`) when the budget stops the fit, however fast the model trains.

    Why: an equal wall-clock comparison of models (experiment=leaderboard) where each model's steps per minute
    differ tenfold; a step-based cosine would need each model's epochs guessed ahead, and a schedule cut short
    before its decay loses most of what the decay buys. The price: the rate at a step depends on how fast the
    machine ran until then, so two runs are not step-for-step alike (the rest of the run, seeds and data, is).
    """

    def __init__(self, optimizer, clock, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01) -> None:
        if not 0.0 <= warmup_fraction < 1.0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise UserError(
                f"need 0 <= warmup_fraction < 1 and 0 <= min_lr_ratio <= 1, got {warmup_fraction}, {min_lr_ratio}"
            )
        self.clock, self.warmup_fraction, self.min_lr_ratio = clock, warmup_fraction, min_lr_ratio
        super().__init__(optimizer)

    def progress(self) -> float:
        return min(1.0, self.clock.elapsed() / self.clock.budget_s)

    def get_lr(self) -> list[float]:
        factor = warmup_cosine_factor(self.progress(), self.warmup_fraction, 1.0, self.min_lr_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict:
        """Without the clock (a callback, checkpointed on its own) so the checkpoint loads with weights_only=True."""
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "clock")}

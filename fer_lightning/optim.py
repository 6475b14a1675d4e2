"""Learning-rate scheduler configs: a torch scheduler plus Lightning's interval / frequency / monitor."""

from __future__ import annotations

from collections.abc import Callable

import torch


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: Callable[..., object],
    interval: str = "epoch",
    frequency: int = 1,
    monitor: str = "val/acc",
) -> dict:
    """Lightning's lr_scheduler dict; `monitor` is only used by schedulers that step on a metric (plateau)."""
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler.interval must be 'epoch' or 'step', got {interval!r}")
    config = {"scheduler": scheduler(optimizer=optimizer), "interval": interval, "frequency": frequency}
    if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return config

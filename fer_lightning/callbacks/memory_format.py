"""Channels-last (NHWC) convolutions, switched on where they are faster.

Why a callback and not a LitModule option: the choice depends on the device the Trainer picked, which the module
does not know when it is built, and it needs no change to the module. Converting the module's 4-D parameters is
enough: a convolution whose weight is channels_last returns a channels_last output (cuDNN and oneDNN both follow
the weight), so the (N, C, H, W) input that `FERLitModule.normalize` makes needs no conversion of its own.
Checkpoints are unaffected: `state_dict` values keep their numbers, and loading copies them into any layout.
"""

from __future__ import annotations

import lightning as L
import torch

from fer_lightning.errors import UserError
from fer_lightning.speed import channels_last_crash_risk

CHOICES = ("auto", True, False)


def channels_last_wanted(enabled: bool | str, device: torch.device) -> bool:
    """`auto`: on for CUDA, where cuDNN's bf16 tensor-core kernels are NHWC (an NCHW model pays a transpose around
    every convolution); off on the CPU, where `python -m fer_lightning.bench --channels-last on|off` measured no
    consistent gain: 1.7x for mini_Xception's depthwise convolutions, none for ResNet-18, a loss for VGG-19
    (experiments/README.md, "Speed"); `true` switches it on for a model that gains."""
    if enabled not in CHOICES:
        raise UserError(f"channels_last must be one of {list(CHOICES)}, got {enabled!r}")
    return device.type == "cuda" if enabled == "auto" else bool(enabled)


def training_batch_sizes(datamodule) -> set[int]:
    """The batch sizes training will see: data.batch_size (the short last batch is dropped), or the whole split
    where it is smaller than one batch."""
    batch_size = getattr(datamodule, "batch_size", None)
    splits = getattr(datamodule, "splits", {})
    if batch_size is None:
        return set()
    if "train" in splits and len(splits["train"][1]) < batch_size:
        return {len(splits["train"][1])}
    return {batch_size}


class ChannelsLast(L.Callback):
    """Convert the LightningModule to channels_last at `setup` (before Lightning moves it to its device, which keeps
    the layout) when `channels_last_wanted(enabled, root device)`; refused, before any step, for a model and
    training batch that hit oneDNN's CPU crash (`channels_last_crash_risk`)."""

    def __init__(self, enabled: bool | str = "auto") -> None:
        channels_last_wanted(enabled, torch.device("cpu"))  # validates the value at instantiation
        self.enabled = enabled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        if not channels_last_wanted(self.enabled, device):
            return
        sizes = training_batch_sizes(trainer.datamodule)
        risky = [n for n in sizes if channels_last_crash_risk(pl_module, device, n)]
        if stage == "fit" and risky:
            raise UserError(
                f"channels_last on the CPU with a training batch of {risky[0]} images: oneDNN's channels_last "
                "backward corrupts memory for this model's 1x1 strided convolutions with few input channels (< 8, "
                "or < 16 on an odd batch; experiments/repro/channels_last_crash.py); use "
                "callbacks.channels_last.enabled=false, or an even data.batch_size"
            )
        pl_module.to(memory_format=torch.channels_last)

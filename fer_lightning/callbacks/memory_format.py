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

CHOICES = ("auto", True, False)


def channels_last_wanted(enabled: bool | str, device: torch.device) -> bool:
    """`auto`: on for CUDA, where cuDNN's bf16 tensor-core kernels are NHWC (an NCHW model pays a transpose around
    every convolution); off on the CPU, where `python -m fer_lightning.bench --channels-last on|off` measured no
    consistent gain: 1.7x for mini_Xception's depthwise convolutions, none for ResNet-18, a loss for VGG-19
    (experiments/README.md, "Speed"); `true` switches it on for a model that gains."""
    if enabled not in CHOICES:
        raise ValueError(f"channels_last must be one of {list(CHOICES)}, got {enabled!r}")
    return device.type == "cuda" if enabled == "auto" else bool(enabled)


class ChannelsLast(L.Callback):
    """Convert the LightningModule to channels_last at `setup` (before Lightning moves it to its device, which keeps
    the layout) when `channels_last_wanted(enabled, root device)`."""

    def __init__(self, enabled: bool | str = "auto") -> None:
        channels_last_wanted(enabled, torch.device("cpu"))  # validates the value at instantiation
        self.enabled = enabled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if channels_last_wanted(self.enabled, trainer.strategy.root_device):
            pl_module.to(memory_format=torch.channels_last)

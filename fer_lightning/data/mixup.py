"""Batch-level Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), applied in the LitModule's training step.

Every sample is mixed with its neighbour in the (shuffled) batch, `batch.roll(1)`, as torchvision's v2 MixUp and
CutMix do; the mixing weight lambda ~ Beta(alpha, alpha) is drawn once per batch from torch's generator (seeded by
`seed_everything`). The targets become probability vectors, trained with `fer_lightning.losses.soft_cross_entropy`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.errors import UserError


class MixupCutmix(nn.Module):
    """Mixup and/or CutMix on a float image batch (N, C, H, W) with index (N,) or probability (N, K) targets.

    alpha 0 turns a method off; with both on, each batch uses CutMix with probability `switch_prob`. `prob` is the
    chance that a batch is mixed at all.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise UserError(f"num_classes must be >= 2, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if not (0.0 <= prob <= 1.0 and 0.0 <= switch_prob <= 1.0):
            raise UserError(f"prob and switch_prob must be in [0, 1], got {prob} and {switch_prob}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = prob, switch_prob

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def check(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"Mixup/CutMix expect a float batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        batch = images.shape[0]
        if targets.is_floating_point():
            if targets.shape != (batch, self.num_classes):
                raise ValueError(f"soft targets must be ({batch}, {self.num_classes}), got {tuple(targets.shape)}")
        elif targets.shape != (batch,):
            raise ValueError(f"targets must be {batch} class indices, got shape {tuple(targets.shape)}")
        elif targets.device.type == "cpu":
            if targets.min() < 0 or targets.max() >= self.num_classes:
                raise ValueError(f"targets must be class indices in 0..{self.num_classes - 1}, got {targets}")
        else:  # on a GPU, reading min/max back would stall the host every step (issue 18): the device asserts
            in_range = ((targets >= 0) & (targets < self.num_classes)).all()
            torch._assert_async(in_range, f"Mixup/CutMix targets must be class indices in 0..{self.num_classes - 1}")

    def probabilities(self, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return targets.to(dtype) if targets.is_floating_point() else F.one_hot(targets, self.num_classes).to(dtype)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(images, targets)
        if not self.active or torch.rand(()).item() >= self.prob:
            return images, self.probabilities(targets, images.dtype)
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or torch.rand(()).item() < self.switch_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return self.mix(images, targets, lam, cutmix)

    def mix(
        self, images: torch.Tensor, targets: torch.Tensor, lam: float, cutmix: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix with weight `lam` on each sample (deterministic apart from CutMix's box position)."""
        probs = self.probabilities(targets, images.dtype)
        partner = images.roll(1, 0)
        if cutmix:
            images, lam = paste_box(images, partner, lam)
        else:
            images = images * lam + partner * (1.0 - lam)
        return images, probs * lam + probs.roll(1, 0) * (1.0 - lam)


def paste_box(images: torch.Tensor, partner: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a random box of area ~(1 - lam) from `partner`; returns the images and lam of the box actually pasted
    (the box is clipped at the border)."""
    height, width = images.shape[-2:]
    ratio = (1.0 - lam) ** 0.5
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    images = images.clone()
    images[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    return images, 1.0 - (bottom - top) * (right - left) / (height * width)

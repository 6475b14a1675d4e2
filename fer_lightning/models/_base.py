"""The interface every model shares (timm's): features, head, classifier reset, number of features; and the width
rounding rule the families with a width multiplier share."""

from __future__ import annotations

import torch
from torch import nn


class FERNet(nn.Module):
    """Base class: subclasses build `self.fc` (or override the head) and implement `forward_features`.

    The default head is global average pooling followed by a linear classifier over `num_features` channels.
    """

    num_features: int
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of 8 without losing more than 10% (the reference implementation's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded

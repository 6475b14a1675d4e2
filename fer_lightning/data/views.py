"""Deterministic eval-time geometry in torch: center crop and test-time-augmentation views.

torchvision is not a dependency (it cannot be imported beside the CPU torch build we pin), so the few
crops the FER literature uses are written here. Every function takes a (C, H, W) tensor of any dtype, or a
(B, C, H, W) batch (`data.loader=device` cuts the views of a whole batch on the device). A TTA returns (V, C, h, w),
or (B, V, C, h, w) for a batch: the view axis is always the one before C (dim=-4); the LitModule averages the
logits over the V views.
"""

from __future__ import annotations

import torch

from fer_lightning.errors import UserError


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    if size > min(height, width):
        raise UserError(f"crop size {size} is larger than the image ({height}x{width})")
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def five_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Four corners and the center, stacked as (5, C, size, size) (or (B, 5, C, size, size) for a batch)."""
    height, width = image.shape[-2:]
    if size > min(height, width):
        raise UserError(f"crop size {size} is larger than the image ({height}x{width})")
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    crops = [image[..., t : t + size, left : left + size] for t, left in corners]
    return torch.stack([*crops, center_crop(image, size)], dim=-4)


class CenterCrop:
    """Single view: the center crop (or the whole image when size is None)."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image if self.size is None else center_crop(image, self.size)


class FlipTTA:
    """Two views: the (center-cropped) image and its horizontal mirror."""

    num_views = 2

    def __init__(self, size: int | None = None) -> None:
        self.crop = CenterCrop(size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self.crop(image)
        return torch.stack([image, image.flip(-1)], dim=-4)


class TenCropTTA:
    """Ten views: four corners and the center, each also mirrored (Krizhevsky et al. 2012).

    `size` is the crop the model trained on; None (a model trained on whole images) takes 90% crops,
    which fully convolutional models with global pooling accept.
    """

    num_views = 10

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        size = self.size or int(0.9 * min(image.shape[-2:]))
        crops = five_crop(image, size)
        return torch.cat([crops, crops.flip(-1)], dim=-4)

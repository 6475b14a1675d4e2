"""Per-sample random augmentation of whole uint8 batches on their own device: the albumentations presets, batched.

Why: on a GPU a small model steps faster than a couple of CPU workers can augment 48x48 faces one at a time with
albumentations. Here a batch that already lives on the device is augmented by a handful of tensor ops, every sample
with its own random parameters (`data.loader=device`, the `device:` node of each `conf/aug/*.yaml` preset).

All the geometry is one resample: for each output pixel the source coordinate is computed backwards through
random crop offset -> flip -> inverse affine (3x3 matrices composed per sample) -> clamp (BORDER_REPLICATE) ->
random resized crop, and one bilinear `grid_sample` reads it at the output size. Brightness/contrast and erasing
(its hole placed in the frame before the crop) are pointwise on the result; the batch is rounded back to uint8 once,
so the LitModule normalises it exactly as it does the workers' batches.

Parameters are drawn as albumentations 2.0 draws them (same ranges, pixel conventions and integer truncations).
The differences that remain, none of which moves the statistics tested in tests/data/test_device_aug.py:
- brightness/contrast comes after the geometry, not between the resized crop and the affine (heavy): a pointwise
  linear map commutes with bilinear interpolation, so only values clipped at 0/255 before interpolation differ;
- one rounding to uint8 at the end instead of one after every step (albumentations' brightness/contrast table
  truncates, half a grey level darker on average), and float coordinates where cv2 uses 1/32-pixel fixed point
  (tests/data/test_device_aug.py: the same fixed affine agrees within 2 grey levels, 0.3 on average);
- the flip is always the last geometric step; `light` flips before its shift, which gives the same distribution
  because the shift range is symmetric;
- the resized crop is resized back to the stored image size (the albumentations preset writes 48x48);
- erasing cuts one hole (the presets' num_holes_range is [1, 1]) and fills it with a constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.errors import UserError

Range = tuple[float, float]


@dataclass(frozen=True)
class ResizedCrop:
    """albumentations.RandomResizedCrop: a crop of `scale` x area and `ratio` aspect, resized to the image size."""

    p: float = 0.0
    scale: Range = (0.08, 1.0)
    ratio: Range = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Affine:
    """albumentations.Affine about the image center: rotation in degrees, translation as a fraction of the size
    (truncated to whole pixels), x and y scale drawn independently; BORDER_REPLICATE."""

    p: float = 0.0
    rotate: Range = (0.0, 0.0)
    translate: Range = (0.0, 0.0)
    scale: Range = (1.0, 1.0)


@dataclass(frozen=True)
class BrightnessContrast:
    """albumentations.RandomBrightnessContrast (brightness_by_max): x * (1 + contrast) + brightness * 255."""

    p: float = 0.0
    brightness: Range = (-0.2, 0.2)
    contrast: Range = (-0.2, 0.2)


@dataclass(frozen=True)
class Erase:
    """albumentations.CoarseDropout with one hole, its height and width fractions of the image size."""

    p: float = 0.0
    height: Range = (0.1, 0.3)
    width: Range = (0.1, 0.3)
    fill: float = 0.0


class Draw:
    """Random numbers for one batch: from `generator` (reproducible) or the device's global generator.

    All of a batch's numbers come from one `torch.rand` of (count, per_sample), handed out column by column in the
    order the steps ask: one kernel (and one graph node under torch.compile) per batch instead of one per step.
    """

    def __init__(
        self, count: int, device: torch.device, generator: torch.Generator | None = None, per_sample: int = 0
    ) -> None:
        self.count, self.device, self.per_sample, self.used = count, device, per_sample, 0
        source = generator.device if generator is not None else device
        self.pool = torch.rand(count, per_sample, generator=generator, device=source).to(device)

    def rand(self, *shape: int) -> torch.Tensor:
        width = math.prod(shape)
        if self.used + width > self.per_sample:
            raise RuntimeError(f"the batch's draw holds {self.per_sample} numbers per sample, a step wants more")
        numbers = self.pool[:, self.used : self.used + width]
        self.used += width
        return numbers.reshape(self.count, *shape)

    def uniform(self, bounds: Range, *shape: int) -> torch.Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * self.rand(*shape)

    def chance(self, p: float) -> torch.Tensor:
        return self.rand() < p

    def position(self, free: torch.Tensor | int) -> torch.Tensor:
        """An integer offset in [0, free] (albumentations' `int((free + 1) * u)`)."""
        return ((free + 1) * self.rand()).floor()


def resized_crop_boxes(spec: ResizedCrop, draw: Draw, height: int, width: int, size: torch.Tensor) -> torch.Tensor:
    """(B, 4) boxes x0, y0, w, h: albumentations' ten tries at a valid box, then its center fallback; `size` is the
    frame's (width, height), a float tensor on the batch's device (built once, not per batch)."""
    area = draw.uniform((spec.scale[0] * height * width, spec.scale[1] * height * width), 10)
    aspect = draw.uniform((math.log(spec.ratio[0]), math.log(spec.ratio[1])), 10).exp()
    w, h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(1, keepdim=True)  # the first valid try, as the sequential loop takes it
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], valid.any(1)
    fall_w, fall_h = width, height
    if width / height < spec.ratio[0]:
        fall_h = round(width / spec.ratio[0])
    elif width / height > spec.ratio[1]:
        fall_w = round(height * spec.ratio[1])
    w, h = torch.where(found, w, fall_w), torch.where(found, h, fall_h)
    x0 = torch.where(found, draw.position(width - w), (width - fall_w) // 2)
    y0 = torch.where(found, draw.position(height - h), (height - fall_h) // 2)
    boxes = torch.stack([x0, y0, w, h], 1)
    whole = torch.cat([torch.zeros_like(size), size])  # the uncropped frame, from the cached size: no host copy
    return torch.where(draw.chance(spec.p)[:, None], boxes, whole)


def inverse_affine(spec: Affine, draw: Draw, size: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) homogeneous map from the affine's output pixels to its input pixels; the identity where not drawn.

    albumentations' forward map is T(center + shift) R S T(-center), R = [[cos, sin], [-sin, cos]] (y down), about
    the center of the pixel grid; the inverse is T(center) S^-1 R^T T(-center - shift).
    """
    on = draw.chance(spec.p)
    angle = torch.deg2rad(draw.uniform(spec.rotate)) * on
    shift = draw.uniform(spec.translate, 2).mul(size).trunc() * on[:, None]  # whole pixels, as albumentations
    scale = torch.where(on[:, None], draw.uniform(spec.scale, 2), 1.0)
    cos, sin = angle.cos(), angle.sin()
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) / scale[:, :, None]
    center = (size - 1) / 2
    return homogeneous(linear, center - (linear @ (center + shift)[:, :, None])[:, :, 0])


def homogeneous(linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) and (B, 2) -> (B, 3, 3) [[linear, shift], [0, 0, 1]]."""
    matrix = torch.zeros(linear.shape[0], 3, 3, device=linear.device, dtype=linear.dtype)
    matrix[:, :2, :2], matrix[:, :2, 2], matrix[:, 2, 2] = linear, shift, 1.0
    return matrix


def translation(shift: torch.Tensor) -> torch.Tensor:
    return homogeneous(torch.eye(2, device=shift.device).expand(len(shift), 2, 2), shift)


def mirror(flip: torch.Tensor, width: int) -> torch.Tensor:
    """x -> width - 1 - x where `flip`: a horizontal flip in pixel-center coordinates."""
    sign = 1.0 - 2.0 * flip.float()
    linear = torch.diag_embed(torch.stack([sign, torch.ones_like(sign)], 1))
    return homogeneous(linear, torch.stack([(1 - sign) / 2 * (width - 1), torch.zeros_like(sign)], 1))


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H * W, 3) homogeneous pixel-center coordinates (x, y, 1), row by row."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys, torch.ones_like(xs)], -1).view(-1, 3)


def resized_crop_to_grid(boxes: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """grid_sample coordinates of the resized crops: `pixel * a + b`, clamped to [lo, hi], each (B, 1, 2).

    cv2.resize maps output pixel q to crop pixel origin + (q + 0.5) * extent / size - 0.5 and replicates the crop's
    edge; grid_sample (align_corners=False) reads pixel r at (2r + 1) / size - 1. Both folded into one scale+shift.
    """
    origin, extent = boxes[:, None, :2], boxes[:, None, 2:]
    a = 2 * extent / size**2
    b = 2 * origin / size + extent / size**2 - 1
    lo, hi = (2 * origin + 1) / size - 1, (2 * (origin + extent - 1) + 1) / size - 1
    return a, b, lo, hi


def cut(images: torch.Tensor, offset: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample (height x width) windows at integer (x, y) offsets: one gather, no resample (exact for uint8)."""
    count, channels, _, stored_width = images.shape
    rows = offset[:, 1].long()[:, None] + torch.arange(height, device=images.device)
    cols = offset[:, 0].long()[:, None] + torch.arange(width, device=images.device)
    index = (rows[:, :, None] * stored_width + cols[:, None, :]).view(count, 1, -1).expand(-1, channels, -1)
    return images.flatten(2).gather(2, index).view(count, channels, height, width)


def as_spec(kind: type, value: Mapping | object | None) -> object | None:
    """A config mapping (a dict or a DictConfig, ranges as lists) -> the dataclass; None, or p = 0, switches the
    step off."""
    if isinstance(value, Mapping):
        value = kind(**{k: tuple(v) if isinstance(v, Sequence) else v for k, v in value.items()})
    if value is not None and not 0.0 <= value.p <= 1.0:
        raise UserError(f"{kind.__name__}.p must be in [0, 1], got {value.p}")
    return value if value is not None and value.p > 0 else None


# random numbers each step takes per sample, in Draw's order: the batch's one draw is this wide
DRAWS = {
    "offset": 2,
    "flip": 1,
    "affine": 1 + 1 + 2 + 2,
    "resized_crop": 10 + 10 + 2 + 1,
    "brightness_contrast": 3,
    "erase": 5,
}


def draws_per_sample(augment: BatchAugment) -> int:
    steps = ("affine", "resized_crop", "brightness_contrast", "erase")
    used = DRAWS["offset"] + (DRAWS["flip"] if augment.flip_p > 0 and augment.resamples else 0)
    return used + sum(DRAWS[step] for step in steps if getattr(augment, step) is not None)


class BatchAugment(nn.Module):
    """uint8 (B, C, H, W) -> uint8 (B, C, s, s), s = `crop_size` or the input size; each sample its own draw.

    The steps, in albumentations' order where it matters: resized crop, affine, flip (one resample), brightness/
    contrast, erasing, random crop. Pass a `generator` on the batch's device (or the CPU) to reproduce a batch.
    """

    def __init__(
        self,
        flip_p: float = 0.0,
        resized_crop: dict | ResizedCrop | None = None,
        affine: dict | Affine | None = None,
        brightness_contrast: dict | BrightnessContrast | None = None,
        erase: dict | Erase | None = None,
        crop_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= flip_p <= 1.0:
            raise UserError(f"flip_p must be in [0, 1], got {flip_p}")
        self.flip_p, self.crop_size = flip_p, crop_size
        self.resized_crop = as_spec(ResizedCrop, resized_crop)
        self.affine = as_spec(Affine, affine)
        self.brightness_contrast = as_spec(BrightnessContrast, brightness_contrast)
        self.erase = as_spec(Erase, erase)
        # decided once, not per batch: a data-dependent branch would make the GPU wait for the host
        self.resamples = flip_p > 0 or self.affine is not None or self.resized_crop is not None
        self.draws_per_sample = draws_per_sample(self)
        self._frames: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        steps = ("resized_crop", "affine", "brightness_contrast", "erase")
        return ", ".join([f"flip_p={self.flip_p}", *(f"{s}={getattr(self, s)}" for s in steps if getattr(self, s))])

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if self.crop_size is not None and self.crop_size > min(height, width):
            raise UserError(f"crop size {self.crop_size} is larger than the images ({height}x{width})")
        draw = Draw(images.shape[0], images.device, generator, self.draws_per_sample)
        out_h, out_w = (self.crop_size, self.crop_size) if self.crop_size is not None else (height, width)
        # the random crop's (x, y) offset: the whole chain below works in the frame before the crop
        offset = torch.stack([draw.position(width - out_w), draw.position(height - out_h)], 1)
        if self.resamples:
            out = self.geometry(images, draw, offset, out_h, out_w)
        else:
            out = cut(images, offset, out_h, out_w) if (out_h, out_w) != (height, width) else images
        if self.brightness_contrast is not None:
            out = self.adjust(out.float(), draw)
        if self.erase is not None:
            out = self.erase_holes(out, draw, offset, height, width)
        return out.round().clamp_(0, 255).to(torch.uint8) if out.is_floating_point() else out

    def geometry(self, images: torch.Tensor, draw: Draw, offset: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
        """Crop offset, flip, affine and resized crop composed backwards into one sampling grid, one resample."""
        count, _, height, width = images.shape
        size, grid_points = self.frame_constants(height, width, out_h, out_w, images.device)
        to_source = translation(offset)  # output pixel -> pixel before the random crop
        if self.flip_p > 0:
            to_source = mirror(draw.chance(self.flip_p), width) @ to_source
        if self.affine is not None:
            to_source = inverse_affine(self.affine, draw, size) @ to_source
        coords = grid_points @ to_source[:, :2].transpose(1, 2)  # (B, h * w, 2)
        if self.affine is not None:
            coords = coords.clamp(min=torch.zeros_like(size), max=size - 1)  # BORDER_REPLICATE of the affine's input
        if self.resized_crop is not None:
            boxes = resized_crop_boxes(self.resized_crop, draw, height, width, size)
            a, b, lo, hi = resized_crop_to_grid(boxes, size)
            grid = torch.addcmul(b, coords, a).clamp_(min=lo, max=hi)  # cv2.resize replicates the crop's edge
        else:
            grid = coords.mul_(2 / size).add_(1 / size - 1)
        grid = grid.view(count, out_h, out_w, 2)
        return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

    def frame_constants(
        self, height: int, width: int, out_h: int, out_w: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame's (width, height) and the output's pixel grid, made once per shape and device: a tensor built
        from Python numbers per batch is a blocking host-to-device copy on a GPU (issue 18)."""
        key = (height, width, out_h, out_w, str(device))
        if key not in self._frames:
            size = torch.tensor([width, height], dtype=torch.float32).to(device)
            self._frames[key] = size, pixel_grid(out_h, out_w, device)
        return self._frames[key]

    def adjust(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        spec, on = self.brightness_contrast, draw.chance(self.brightness_contrast.p)
        alpha = torch.where(on, 1.0 + draw.uniform(spec.contrast), 1.0)[:, None, None, None]
        beta = torch.where(on, 255.0 * draw.uniform(spec.brightness), 0.0)[:, None, None, None]
        return (images * alpha + beta).clamp_(0, 255)

    def erase_holes(
        self, images: torch.Tensor, draw: Draw, offset: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """One hole placed in the (height x width) frame before the random crop, cut at `offset` like the image."""
        spec, on = self.erase, draw.chance(self.erase.p)
        hole_h, hole_w = (height * draw.uniform(spec.height)).trunc(), (width * draw.uniform(spec.width)).trunc()
        top = draw.position(height - hole_h) - offset[:, 1]
        left = draw.position(width - hole_w) - offset[:, 0]
        rows = torch.arange(images.shape[-2], device=images.device)[None]
        cols = torch.arange(images.shape[-1], device=images.device)[None]
        in_rows = (rows >= top[:, None]) & (rows < (top + hole_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + hole_w)[:, None])
        inside = on[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
        return images.masked_fill(inside[:, None], spec.fill)

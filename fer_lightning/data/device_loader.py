"""Ready batches cut from tensors that already live on the training device: no DataLoader, no workers.

`data.loader=device` keeps every split as one uint8 tensor on the device; an epoch is a seeded permutation of the
indices (the same on every rank), each rank takes its strided shard of it, and a batch is one index into the
device tensor, augmented there (`BatchAugment`) for training or cut into views (`fer_lightning.data.views`) for
evaluation. Lightning iterates any iterable with a length, and calls `sampler.set_epoch` on it every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from fer_lightning.data.device_aug import BatchAugment


def epoch_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, rank, ...): neighbouring epochs and ranks get unrelated streams."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpochPermutation:
    """Which indices one rank visits in an epoch, like DistributedSampler.

    Every rank draws the same permutation (or, with `weights`, the same draws with replacement) from
    (seed, epoch), then takes every `world_size`-th index from its `rank`. With `pad` (training) the order is padded
    with its own first indices to a multiple of `world_size`, so that all ranks take the same number of steps: each
    training step all-reduces gradients, and a rank with one step fewer would leave the others waiting. Without it
    (evaluation) the shards partition the split exactly, each image on one rank once; shards then differ by at most
    one image, which evaluation allows: its loop runs no per-batch collective, and torchmetrics sums the ranks'
    counts at compute (a padded duplicate would count twice).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: torch.Tensor | None = None,
        pad: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size, self.shuffle, self.seed, self.rank, self.world_size = size, shuffle, seed, rank, world_size
        self.weights, self.pad, self.epoch = weights, pad, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def indices(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.pad:
            padding = len(self) * self.world_size - self.size
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world_size]


class DeviceBatches:
    """An iterable of (images, targets) batches indexed from device tensors.

    `images` is uint8 (N, C, H, W) on the device (C as stored; a gray image is repeated to `in_chans` per batch);
    `augment` draws from a generator seeded by (seed, epoch, rank), so an epoch's augmentation is reproducible and
    independent across ranks; `views` turns a (B, C, H, W) batch into its eval views (center crop, TTA);
    `drop_last` leaves out the epoch's last, short batch, as DataLoader's does.
    """

    # DataLoader's attribute pair: Lightning reads `sampler` (set_epoch every epoch) and then `batch_sampler`
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        sampler: EpochPermutation,
        augment: BatchAugment | None = None,
        views: Callable[[torch.Tensor], torch.Tensor] | None = None,
        in_chans: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if len(images) != len(targets) or len(images) != sampler.size:
            raise ValueError(f"{len(images)} images, {len(targets)} targets, a sampler over {sampler.size}")
        self.images, self.targets, self.batch_size, self.sampler = images, targets, batch_size, sampler
        self.augment, self.views, self.in_chans = augment, views, in_chans or images.shape[1]
        self.drop_last = drop_last

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(len(self.sampler) / self.batch_size)

    def generator(self) -> torch.Generator:
        sampler = self.sampler
        seed = epoch_seed(sampler.seed, sampler.epoch, sampler.rank, 1)  # 1: not the permutation's stream
        return torch.Generator(device=self.images.device).manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.indices().to(self.images.device)
        generator = self.generator() if self.augment is not None else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, generator)
            if self.views is not None:
                images = self.views(images)
            if images.shape[-3] != self.in_chans:  # after the augmentation: a gray image is augmented once
                images = images.expand(*images.shape[:-3], self.in_chans, *images.shape[-2:])
            yield images, self.targets[index]


def to_device_tensors(
    images: np.ndarray, targets: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W) or (N, H, W, C) and labels (N,) or probabilities (N, K) -> (N, C, H, W) uint8 and int64 or
    float32 targets on `device`: what the workers' collation would give, once for the whole split."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.ascontiguousarray(targets))
    labels = labels.long() if labels.ndim == 1 else labels.float()
    return tensor.contiguous().to(device), labels.to(device)

"""Seeded, resumable training loaders: two runs with one seed augment alike, and a run resumed mid-epoch goes on
with the very batches an uninterrupted run would have trained on.

albumentations 2.x draws from its own generators (neither `seed_everything` nor the workers' seeding reach them),
so every image's draw is seeded here: the training sampler yields `(index, draw_seed)` pairs, the seed a function
of (run seed, epoch, position in the epoch), and `FERDataset` reseeds the transform with it. The augmentation then
depends on neither the worker count nor which worker takes a batch. The epoch's order comes from (seed, epoch)
(`EpochPermutation`), not from the global torch generator, and the DataLoader draws its worker seeds from a
generator of its own: data loading leaves the run's random streams (dropout, Mixup) alone.

Lightning saves a loader's `state_dict` in checkpoints and calls `load_state_dict` before a resumed fit's first
iteration: the state is the epoch and how many of its batches the training loop has run, and the resumed epoch
starts after them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fer_lightning.data.device_loader import DeviceBatches, EpochPermutation, epoch_seed

# (batches the training loop has run in the current epoch, whether that epoch is finished), from the trainer
Progress = Callable[[], tuple[int, bool]]


def reseed_transform(transform, seed: int) -> None:
    """One image's draws from `seed`: an albumentations Compose's generators are replaced (one pair for all of its
    transforms: ~10 us, not the ~20 us per transform of `set_random_seed`)."""
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.Generator(np.random.PCG64(seed)), random.Random(seed))


class SeededEpochSampler(DistributedSampler):
    """This rank's indices of an epoch, each with the seed of its augmentation draw.

    A DistributedSampler by type only, so that Lightning uses it as given under DDP instead of wrapping it (its
    order and sharding are `EpochPermutation`'s, as on the device path). `skip_to(n)` starts the next iteration at
    position n (a resumed epoch).
    """

    def __init__(self, permutation: EpochPermutation) -> None:  # no super().__init__: nothing of its state is used
        self.permutation, self.start = permutation, 0

    @property
    def epoch(self) -> int:
        return self.permutation.epoch

    def set_epoch(self, epoch: int) -> None:
        self.permutation.set_epoch(epoch)

    def skip_to(self, position: int) -> None:
        self.start = position

    def __len__(self) -> int:
        return len(self.permutation)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0  # only the resumed epoch is shortened
        perm = self.permutation
        order = perm.indices().tolist()
        for position in range(start, len(order)):
            yield order[position], epoch_seed(perm.seed, perm.epoch, perm.rank, position, 2)  # 2: the images' stream


class ResumableState:
    """What both loaders save: the epoch and the batches done in it; on load, where the resumed epoch starts."""

    progress: Progress | None

    def state_dict(self) -> dict:
        done, finished = self.progress() if self.progress is not None else (0, True)
        return {"epoch": self.sampler.epoch, "batches_done": done, "epoch_finished": finished}

    def load_state_dict(self, state: dict) -> None:
        # Lightning creates the resumed fit's iterator before it calls set_epoch: the epoch is set here
        if state["epoch_finished"]:
            self.sampler.set_epoch(state["epoch"] + 1)
        else:
            self.sampler.set_epoch(state["epoch"])
            self.skip_batches(state["batches_done"])


class ResumableDataLoader(ResumableState, DataLoader):
    """A DataLoader over a `SeededEpochSampler`, with worker seeds from a generator of its own."""

    def __init__(self, dataset, sampler: SeededEpochSampler, progress: Progress | None = None, **kwargs) -> None:
        generator = torch.Generator().manual_seed(epoch_seed(sampler.permutation.seed, sampler.permutation.rank, 3))
        super().__init__(dataset, sampler=sampler, generator=generator, **kwargs)
        self.progress = progress

    def skip_batches(self, batches: int) -> None:
        self.sampler.skip_to(batches * self.batch_size)


class ResumableDeviceBatches(ResumableState, DeviceBatches):
    """`DeviceBatches` that resume mid-epoch: the skipped batches' augmentation is drawn and dropped, so that the
    rest of the epoch gets the draws it would have had (on the device this costs a fraction of one epoch's augmenting,
    and no model step)."""

    def __init__(self, *args, progress: Progress | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress, self.skip = progress, 0

    def skip_batches(self, batches: int) -> None:
        self.skip = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip, self.skip = self.skip, 0
        for number, batch in enumerate(super().__iter__()):
            if number >= skip:
                yield batch

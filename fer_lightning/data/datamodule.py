"""LightningDataModule for every FER data format (`data.format`, see `formats/`): one train/val/test pipeline.

FER2013's convention: Training = train, PublicTest = val, PrivateTest = test. Images stay uint8 end to end
(memory-mapped cache -> uint8 arrays in memory -> albumentations in the workers -> uint8 batches); conversion to
float and normalisation happen on the model's device, in the LitModule. With `data.loader=device` every split lives
on the training device as one uint8 tensor and batches are augmented there (`device_loader.py`, `device_aug.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fer_lightning.data.device_loader import DeviceBatches, EpochPermutation, to_device_tensors
from fer_lightning.data.formats import FER2013_SOURCE, SourceData, check_format, drop_blank_images, load_source
from fer_lightning.data.formats.fer2013 import FER2013_CLASSES, FER2013_SIZE, check_policy
from fer_lightning.data.formats.ferplus import LABEL_MODES
from fer_lightning.data.kfold import check_kfold_options, split_rows
from fer_lightning.data.resumable import (
    ResumableDataLoader,
    ResumableDeviceBatches,
    SeededEpochSampler,
    reseed_transform,
)
from fer_lightning.data.sampling import (
    BALANCE_MODES,
    SPLITS,
    balanced_sampler,
    check_fractions,
    class_counts,
    class_weights,
    hard_labels,
)
from fer_lightning.data.views import CenterCrop
from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

# workers: a DataLoader, albumentations per image in its workers; device: every split on the training device,
# augmented per batch there (the aug preset's `device` node)
LOADERS = ("workers", "device", "auto")

__all__ = ["FER2013_SOURCE", "FERDataModule", "FERDataset"]


def to_chw(image: np.ndarray, in_chans: int) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 array -> (in_chans, H, W) tensor (a gray image is repeated for 3 channels)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.expand(in_chans, -1, -1) if tensor.shape[0] != in_chans else tensor


class FERDataset(Dataset):
    """Indexes uint8 images (N, H, W) or (N, H, W, C); returns a (C, h, w) uint8 tensor, or (V, C, h, w) for TTA
    views, with an int label or, for soft targets (N, K), a float probability vector."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        in_chans: int = 1,
        transform: Callable | None = None,
        views: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise UserError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.in_chans, self.transform, self.views = in_chans, transform, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int | torch.Tensor]:
        if isinstance(index, tuple):  # (index, draw seed) from SeededEpochSampler: this image's augmentation draw
            index, seed = index
            reseed_transform(self.transform, seed)
        image = np.asarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = to_chw(image, self.in_chans)
        if self.views is not None:
            tensor = self.views(tensor)
        label = self.labels[index]
        return tensor, int(label) if np.ndim(label) == 0 else torch.from_numpy(np.array(label))


class FERDataModule(L.LightningDataModule):
    """Any FER data format, decoded once and cached; `synthetic` generates the embedded stand-in CSV first."""

    def __init__(
        self,
        path: str,
        format: str = "fer2013",  # the config key users write (data.format), hence the builtin's name
        num_classes: int = 7,
        class_names: Sequence[str] = FER2013_CLASSES,
        in_chans: int = 1,
        image_size: int = FER2013_SIZE,
        crop_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        cache_dir: str | None = None,
        mean: float | None = None,
        std: float | None = None,
        train_transform: Callable | None = None,
        eval_transform: Callable | None = None,
        tta: Callable | None = None,
        synthetic: dict | None = None,
        votes_path: str | None = None,
        label_mode: str = "majority",
        on_bad_rows: str = "error",
        drop_blank: bool = False,
        split: str = "usage",
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        folds: int = 5,
        fold: int = 0,
        kfold_pool: str = "train_val",
        balance: str = "none",
        loader: str = "auto",
        device_transform: nn.Module | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.path, self.format, self.votes_path, self.label_mode = Path(path), format, votes_path, label_mode
        # the names the data is read with (folder formats map folders to them) and the order it is given in: they
        # differ once order_classes_as relabels the data to a checkpoint's order
        self.source_class_names = self.class_names = tuple(class_names)
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        self.crop_size, self.batch_size, self.eval_batch_size = crop_size, batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.cache_dir = num_workers, pin_memory, cache_dir
        self.mean, self.std = mean, std
        self.train_transform, self.eval_transform, self.tta = train_transform, eval_transform, tta
        self.synthetic, self.on_bad_rows, self.drop_blank = synthetic, on_bad_rows, drop_blank
        self.split, self.split_fractions, self.split_seed, self.balance = split, split_fractions, split_seed, balance
        self.kfold = {"folds": folds, "fold": fold, "pool": kfold_pool}  # data.split=kfold only (kfold.py)
        # `loader` is taken by the method that builds a DataLoader, hence loader_kind
        self.loader_kind, self.device_transform, self.seed = loader, device_transform, seed or 0
        self.check_options()
        if loader == "auto":
            self.loader_kind = auto_loader(train_transform, device_transform, eval_transform)
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.skipped_rows: list[str] = []  # every skipped bad row / file (data.on_bad_rows=skip)
        self.class_weights: torch.Tensor | None = None  # set in setup when balance == weighted_loss
        self.label_map: np.ndarray | None = None  # order_classes_as: the data's class index -> the index it becomes
        self._prepared: SourceData | None = None
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # data.loader=device: split -> tensors
        # which split `trainer.test` evaluates: eval.py points it at "val" to report PublicTest the same way
        self.test_split = "test"

    def check_options(self) -> None:
        """Every option's value is checked here, before any data is read."""
        check_format(self.format)
        check_policy(self.on_bad_rows)
        check_fractions(self.split_fractions)
        check_kfold_options(self.split, **self.kfold)
        if len(self.class_names) != self.num_classes:
            raise UserError(
                f"data.class_names has {len(self.class_names)} names but data.num_classes={self.num_classes}"
            )
        for key, value, allowed in (
            ("label_mode", self.label_mode, LABEL_MODES),
            ("balance", self.balance, BALANCE_MODES),
            ("loader", self.loader_kind, LOADERS),
        ):
            if value not in allowed:
                raise UserError(f"data.{key} must be one of {list(allowed)}, got {value!r}")
        if self.loader_kind == "device" and self.eval_transform is not None:
            raise UserError("data.loader=device has no albumentations at eval: use an aug preset with eval: null")

    def load(self) -> SourceData:
        return load_source(
            self.format, self.path, class_names=list(self.source_class_names), in_chans=self.in_chans,
            image_size=self.image_size, cache_dir=self.cache_dir, on_bad_rows=self.on_bad_rows,
            votes_path=self.votes_path, label_mode=self.label_mode,
        )  # fmt: skip

    def prepare_data(self) -> None:
        """Generate the synthetic file if asked, then decode once into the cache (rank 0 only)."""
        if self.splits:
            return  # fit, validate and test each call this: the data is already in memory
        if self.synthetic is not None:
            from fer_lightning.data.formats.synthetic import ensure_synthetic_fer_csv

            ensure_synthetic_fer_csv(self.path, **self.synthetic)
        self._prepared = self.load()  # setup in this process reuses it; other ranks read the cache

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # setup runs once per stage; the arrays do not change between them
        data, self._prepared = self._prepared or self.load(), None
        self.skipped_rows = list(data.skipped)
        if self.drop_blank:
            data = drop_blank_images(data, self.path)
        self.check_targets(data.targets)
        split = split_rows(
            hard_labels(data.targets), data.split, self.split, self.split_fractions, self.split_seed,
            kfold=self.kfold, class_names=self.source_class_names,
        )  # fmt: skip
        for index, name in enumerate(SPLITS):
            rows = np.flatnonzero(split == index)
            if not len(rows):
                raise UserError(f"{self.path}: the {name} split is empty; check the data or data.split_fractions")
            images = resize_images(np.ascontiguousarray(data.images[rows]), self.image_size)
            self.splits[name] = (images, relabel(np.ascontiguousarray(data.targets[rows]), self.label_map))
        self.fit_statistics()
        log.info("data %s (%s): %s", self.path, self.format, {k: len(v[1]) for k, v in self.splits.items()})

    def check_targets(self, targets: np.ndarray) -> None:
        width = targets.shape[1] if targets.ndim == 2 else int(targets.max()) + 1
        if width > self.num_classes or (targets.ndim == 2 and width != self.num_classes):
            raise UserError(f"{self.path}: the data has {width} classes but data.num_classes={self.num_classes}")

    def order_classes_as(self, class_names: Sequence[str]) -> None:
        """Take another order of the same classes (a checkpoint's), matched by name case-insensitively: every label
        (a soft target's column) follows its class name; before setup the labels are relabelled as they are split."""
        position = {name.lower(): index for index, name in enumerate(class_names)}
        if sorted(position) != sorted(name.lower() for name in self.class_names):
            raise UserError(f"{self.path}: classes {list(self.class_names)} cannot be ordered as {list(class_names)}")
        label_map = np.array([position[name.lower()] for name in self.class_names], dtype=np.int64)
        self.splits = {split: (images, relabel(targets, label_map)) for split, (images, targets) in self.splits.items()}
        if self.class_weights is not None:  # one weight per class: a column, moved like a soft target's
            self.class_weights = torch.from_numpy(relabel(self.class_weights.numpy()[None], label_map)[0])
        self._on_device.clear()
        self.label_map = label_map if self.label_map is None else label_map[self.label_map]
        self.class_names = tuple(class_names)

    def fit_statistics(self) -> None:
        """Normalisation statistics and class balance, from the training split only."""
        pixels, labels = self.splits["train"]
        if self.mean is None or self.std is None:
            self.mean = float(pixels.mean() / 255.0)
            self.std = float(pixels.std() / 255.0)
            log.info("normalisation from the train split: mean %.4f, std %.4f", self.mean, self.std)
        counts = class_counts(labels, self.num_classes)
        log.info("train class counts: %s", dict(zip(self.class_names, counts.tolist())))
        if self.balance == "weighted_loss":
            self.class_weights = class_weights(labels, self.num_classes)
            log.info("class weights for the loss: %s", [round(w, 3) for w in self.class_weights.tolist()])

    @property
    def preprocessing(self) -> dict:
        """What a model trained on this data expects; stored in checkpoints so predict/export can reproduce it."""
        return {
            "image_size": self.image_size,
            "crop_size": self.crop_size,
            "in_chans": self.in_chans,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names),
        }

    @property
    def views(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.tta if self.tta is not None else CenterCrop(self.crop_size)

    def dataset(self, split: str) -> FERDataset:
        images, labels = self.splits[split]
        if split == "train":
            return FERDataset(images, labels, self.in_chans, self.train_transform)
        return FERDataset(images, labels, self.in_chans, self.eval_transform, self.views)

    def loader(self, split: str) -> DataLoader:
        train = split == "train"
        options = {
            "batch_size": self.batch_size if train else self.eval_batch_size, "num_workers": self.num_workers,
            "pin_memory": self.pin_memory, "drop_last": self.drop_last(split),
            "persistent_workers": self.num_workers > 0,
        }  # fmt: skip
        if train and not (self.trainer is not None and self.trainer.overfit_batches):
            sampler = SeededEpochSampler(self.epoch_permutation(len(self.splits["train"][1]), shuffle=True))
            return ResumableDataLoader(self.dataset(split), sampler, progress=self.train_progress, **options)
        if train:  # overfit_batches: Lightning replaces the sampler with a sequential one; seeded as a whole
            reseed_transform(self.train_transform, self.seed)
        return DataLoader(self.dataset(split), **options)

    def epoch_permutation(self, size: int, shuffle: bool) -> EpochPermutation:
        """The training order of every epoch, from (seed, epoch), sharded for this rank; balanced draws with
        data.balance=weighted_sampler."""
        rank, world_size = self.rank_and_world_size()
        weights = None
        if self.balance == "weighted_sampler":
            weights = balanced_sampler(self.splits["train"][1], self.num_classes).weights
        return EpochPermutation(
            size, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world_size, weights=weights
        )

    def train_progress(self) -> tuple[int, bool]:
        """(batches the fit has run in this epoch, whether the epoch is finished): what a training loader saves in a
        checkpoint. `processed` counts a batch whose step ran even when the checkpoint was saved before its
        on_train_batch_end finished (Lightning counts that batch done on resume)."""
        trainer = self.trainer
        if trainer is None:
            return 0, True
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, done >= trainer.num_training_batches

    def device_loader(self, split: str, device: torch.device | str | None = None) -> DeviceBatches:
        """Batches of `split` cut on `device` (default: the trainer's root device, else the CPU); this rank's shard."""
        device = torch.device(device) if device is not None else self.root_device
        if split not in self._on_device or self._on_device[split][0].device != device:
            self._on_device[split] = to_device_tensors(*self.splits[split], device)  # once per split, not per epoch
        images, targets = self._on_device[split]
        train = split == "train"
        options = {
            "augment": self.device_transform if train else None, "views": None if train else self.views,
            "in_chans": self.in_chans, "drop_last": self.drop_last(split),
        }  # fmt: skip
        if not train:
            rank, world_size = self.rank_and_world_size()
            # pad=False: the ranks' shards partition the split, each image evaluated once (issue 18)
            sampler = EpochPermutation(len(targets), shuffle=False, rank=rank, world_size=world_size, pad=False)
            return DeviceBatches(images, targets, self.eval_batch_size, sampler, **options)
        # overfit_batches must see the same few batches every epoch (Lightning unshuffles only DataLoaders)
        shuffle = not (self.trainer is not None and self.trainer.overfit_batches)
        sampler = self.epoch_permutation(len(targets), shuffle)
        return ResumableDeviceBatches(
            images, targets, self.batch_size, sampler, progress=self.train_progress, **options
        )

    def drop_last(self, split: str) -> bool:
        """Training leaves out each epoch's last, short batch (a different sample is left out every epoch): on the
        CPU the backward of a channels_last model crashed on FER2013's 28,709 % 64 = 37-image batch (issue 14,
        experiments/repro/), one odd shape recompiles under torch.compile, and a 37-image BatchNorm batch is noisier.
        A train split smaller than one batch keeps its only batch. Evaluation sees every image."""
        return split == "train" and len(self.splits["train"][1]) >= self.batch_size * self.world_size()

    def world_size(self) -> int:
        return self.rank_and_world_size()[1]

    @property
    def root_device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def rank_and_world_size(self) -> tuple[int, int]:
        """This process's shard of every epoch: the trainer's, else torch.distributed's when initialised."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def dataloader(self, split: str) -> DataLoader | DeviceBatches:
        return self.device_loader(split) if self.loader_kind == "device" else self.loader(split)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self.dataloader(self.test_split)


def auto_loader(train_transform: Callable | None, device_transform: nn.Module | None, eval_transform) -> str:
    """`data.loader=auto`: the device path wherever the aug preset can run there (its `device:` node, or nothing to
    augment, and no albumentations at eval). Measured on the 2-core CPU (experiments/README.md, "Speed"), the
    workers' per-image albumentations take cores from the model step (496 vs 663 img/s for mini_Xception); on a GPU
    two workers cannot feed it. A preset with albumentations only (no `device:` node) keeps the workers."""
    on_device = (device_transform is not None or train_transform is None) and eval_transform is None
    return "device" if on_device else "workers"


def relabel(targets: np.ndarray, label_map: np.ndarray | None) -> np.ndarray:
    """Class index i becomes label_map[i]: a hard label is looked up, a soft target's column i moves there."""
    if label_map is None:
        return targets
    if targets.ndim == 1:
        return label_map[targets]
    moved = np.empty_like(targets)
    moved[:, label_map] = targets
    return moved


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize once at setup (not per step) when the model wants another size than the stored one."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR) for img in images])

"""LightningDataModule for FER2013-format data: Training = train, PublicTest = val, PrivateTest = test.

Images stay uint8 end to end (memory-mapped cache -> albumentations in the workers -> uint8 batches);
conversion to float and normalisation happen on the model's device, in the LitModule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fer_lightning.data.fer2013 import FER2013_CLASSES, FER2013_SIZE, FERArrays, load_fer2013
from fer_lightning.data.views import CenterCrop

log = logging.getLogger(__name__)

FER2013_SOURCE = (
    "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"
)


class FERDataset(Dataset):
    """Indexes uint8 images (N, H, W); returns a (C, h, w) uint8 tensor, or (V, C, h, w) for TTA views."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        in_chans: int = 1,
        transform: Callable | None = None,
        views: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.in_chans, self.transform, self.views = in_chans, transform, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = np.asarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
        if self.in_chans != 1:
            tensor = tensor.expand(self.in_chans, -1, -1)
        if self.views is not None:
            tensor = self.views(tensor)
        return tensor, int(self.labels[index])


class FERDataModule(L.LightningDataModule):
    """FER2013 CSV (or `.csv.gz`) splits, decoded once and cached; `synthetic` generates the embedded stand-in."""

    def __init__(
        self,
        path: str,
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
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.class_names = tuple(class_names)
        if len(self.class_names) != num_classes:
            raise ValueError(f"data.class_names has {len(self.class_names)} names but data.num_classes={num_classes}")
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        self.crop_size, self.batch_size, self.eval_batch_size = crop_size, batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.cache_dir = num_workers, pin_memory, cache_dir
        self.mean, self.std = mean, std
        self.train_transform, self.eval_transform, self.tta = train_transform, eval_transform, tta
        self.synthetic = synthetic
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # which split `trainer.test` evaluates: eval.py points it at "val" to report PublicTest the same way
        self.test_split = "test"

    def prepare_data(self) -> None:
        """Generate the synthetic file if asked, then decode once into the cache (rank 0 only)."""
        if self.synthetic is not None:
            from fer_lightning.data.synthetic import ensure_synthetic_fer_csv

            ensure_synthetic_fer_csv(self.path, **self.synthetic)
        check_data_file(self.path)
        load_fer2013(self.path, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # setup runs once per stage; the arrays do not change between them
        arrays = load_fer2013(self.path, self.cache_dir)
        for usage, split in (("Training", "train"), ("PublicTest", "val"), ("PrivateTest", "test")):
            images, labels = split_arrays(arrays, usage)
            self.splits[split] = (resize_images(images, self.image_size), labels)
        if self.mean is None or self.std is None:
            pixels = self.splits["train"][0]
            self.mean = float(pixels.mean() / 255.0)
            self.std = float(pixels.std() / 255.0)
        log.info("data %s: %s", self.path, {k: len(v[1]) for k, v in self.splits.items()})

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

    def dataset(self, split: str) -> FERDataset:
        images, labels = self.splits[split]
        if split == "train":
            return FERDataset(images, labels, self.in_chans, self.train_transform)
        views = self.tta if self.tta is not None else CenterCrop(self.crop_size)
        return FERDataset(images, labels, self.in_chans, self.eval_transform, views)

    def loader(self, split: str) -> DataLoader:
        train = split == "train"
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_split)


def split_arrays(arrays: FERArrays, usage: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = arrays.split(usage)
    if len(labels) == 0:
        raise ValueError(f"the data has no {usage!r} rows; FER2013 needs Training, PublicTest and PrivateTest rows")
    return np.ascontiguousarray(images), np.ascontiguousarray(labels)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize once at setup (not per step) when the model wants another size than the stored one."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR) for img in images])


def check_data_file(path: Path) -> None:
    if path.exists():
        return
    raise FileNotFoundError(
        f"FER2013 data not found at {path.resolve()}.\n"
        f"  Download fer2013.csv (or fer2013.csv.gz) from Kaggle: {FER2013_SOURCE}\n"
        f"  and put it there, or point to it with data.path=/path/to/fer2013.csv\n"
        f"  To try the framework on the embedded synthetic data instead: python train.py data=synthetic"
    )

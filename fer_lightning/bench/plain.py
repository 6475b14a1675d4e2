"""The reference path of `fer_lightning.bench`: a training epoch written the way the one-off FER scripts write it.

What those scripts do (e.g. the PyTorch FER2013 repositories this framework replaces): a `Dataset` over an in-memory
uint8 array whose `__getitem__` augments one image and returns a normalised float32 tensor (ToTensor + Normalize),
a `DataLoader(shuffle=True, num_workers=W)` built without persistent workers or pinned memory, a float32 NCHW model,
and a loop that moves each batch to the device and reads the running loss and accuracy back every step
(`loss.item()`, `correct += ...sum().item()`). It is given everything the framework path gets that is not a
speed choice: the same images, the same albumentations transform, the same number of workers, model, optimizer
and loss, so `framework / plain_loop` measures the engineering choices alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset


class PlainFERDataset(Dataset):
    """uint8 images (N, H, W) -> (augmented, normalised float32 (C, h, w) tensor, int label), one image at a time."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Callable | None,
        mean: float,
        std: float,
        in_chans: int = 1,
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.mean, self.std, self.in_chans = mean, std, in_chans

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(image.astype(np.float32) / 255.0)  # ToTensor
        tensor = ((tensor - self.mean) / self.std).unsqueeze(0)  # Normalize
        return tensor.repeat(self.in_chans, 1, 1) if self.in_chans != 1 else tensor, int(self.labels[index])


def plain_epoch(
    net: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    batches: int,
    label_smoothing: float = 0.0,
    budget_s: float = math.inf,
) -> tuple[int, float]:
    """One epoch of at most `batches` steps (a fresh iterator: workers start anew, as without persistent workers);
    returns (images, seconds), the clock including the workers' start. It also ends after the step that spends
    `budget_s` seconds (checked after every step, like Lightning's `max_time`), for a race on a time budget."""
    net.train()
    running_loss, correct, images = 0.0, 0, 0
    start = time.perf_counter()
    for step, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)
        if hasattr(net, "regularization_loss"):  # the same objective as the framework's step
            loss = loss + net.regularization_loss()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # the reference loops print a running loss and accuracy
        correct += int((outputs.argmax(1) == targets).sum().item())
        images += inputs.shape[0]
        if step + 1 == batches or time.perf_counter() - start >= budget_s:
            break
    return images, time.perf_counter() - start


def evaluate(net: torch.nn.Module, loader: DataLoader, device: torch.device, batches: int = 0) -> float:
    """Top-1 accuracy over at most `batches` batches of `loader` (0 = all), in eval mode (BatchNorm's running
    statistics, no dropout) and without autograd; the net is left in train mode for the next epoch."""
    net.eval()
    correct, total = 0, 0
    with torch.inference_mode():
        for step, (inputs, targets) in enumerate(loader):
            outputs = net(inputs.to(device))
            correct += int((outputs.argmax(1) == targets.to(device)).sum().item())
            total += len(targets)
            if step + 1 == batches:
                break
    net.train()
    return correct / total if total else float("nan")


def plain_loop_images_per_s(
    net: torch.nn.Module,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    dataset: PlainFERDataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    batches: int,
    label_smoothing: float = 0.0,
) -> float:
    """Images/s of the second of two epochs (the first warms up the allocator, oneDNN/cuDNN and the page cache)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # torch's default, which the reference scripts keep
    net = net.to(device)
    optimizer = optimizer_factory(params=net.parameters())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    plain_epoch(net, loader, optimizer, device, batches, label_smoothing)
    images, seconds = plain_epoch(net, loader, optimizer, device, batches, label_smoothing)
    return images / seconds

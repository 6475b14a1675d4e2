"""The training paths `fer-bench` (`python -m fer_lightning.bench`, `make bench`) measures, per model, on the same
number of training images for every path:

- `bare_step`: forward + backward + optimizer step on one preloaded, normalised batch already on the device, in the
  framework's precision, memory format and compile setting (the ceiling: no data, no loop);
- `framework`: an epoch through the framework, once per data path (`data.loader=workers`: albumentations in
  DataLoader workers; `device`: batched augmentation on the training device): the real FERDataModule with the `aug`
  preset, the Lightning loop and the FERLitModule, with the configured callbacks that change speed (channels_last);
  `framework / bare_step` is the framework efficiency;
- `plain_loop`: the same epoch written the way the reference FER scripts do it (`plain.py`: per-image
  transforms to float32 tensors, same workers, float32 NCHW model, per-step `.item()`); `framework / plain_loop`;
- inference of the trained LitModule (uint8 in, normalisation included): median latency of one face (batch 1)
  and throughput at batch 256;
- peak memory of each training path: CUDA memory allocated, or on the CPU the main process's peak RSS (workers
  are other processes and are not counted).

Epoch paths run two epochs of `--batches` batches and time the second whole (its loader start included), so the
first warms up workers, allocators, cuDNN/oneDNN and torch.compile; the bare step warms up for 5 steps.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.nn import functional as F

from fer_lightning.bench.machine import measured
from fer_lightning.bench.plain import PlainFERDataset, plain_loop_images_per_s
from fer_lightning.bench.timing import synchronize, timed_calls, train_step_images_per_s
from fer_lightning.config import compose, group_choice
from fer_lightning.speed import set_matmul_precision
from fer_lightning.training import build_module

# the bench's own defaults, before the overrides it is given: the embedded data, the FER literature's augmentation
DEFAULT_OVERRIDES = ("data=synthetic", "aug=heavy")


@dataclass
class Settings:
    """The speed choices of the framework paths (the plain loop keeps the reference scripts' own)."""

    device: str
    precision: str  # Lightning's: 32-true, or bf16-mixed (autocast)
    channels_last: bool
    compile: bool
    workers: int
    batches: int  # timed training batches per path; 0 = one whole epoch
    repeats: int  # timed batch-1 inference calls

    @property
    def autocast(self) -> bool:
        return self.precision.startswith("bf16")


def compose_cfg(model: str, loader: str | None, overrides: Sequence[str], settings: Settings, workdir: Path):
    gpu = settings.device == "cuda"
    speed = [
        f"model={model}", f"data.num_workers={settings.workers}", f"data.pin_memory={gpu}",
        f"trainer={'gpu' if gpu else 'cpu'}", f"trainer.precision={settings.precision}",
        f"module.compile={settings.compile}", f"callbacks.channels_last.enabled={settings.channels_last}",
        "module.scheduler=null", "logger=none",
    ]  # fmt: skip
    speed += [f"data.loader={loader}"] if loader else []
    # the user's overrides last, so they win (a scheduler that needs validation, say, stays off unless asked)
    return compose("train", [*DEFAULT_OVERRIDES, *speed, *overrides], output_dir=workdir)


def describe(overrides: Sequence[str]) -> dict[str, str | None]:
    """The aug preset and the data file (None for the embedded data) every path of a bench run uses."""
    cfg = compose("train", [*DEFAULT_OVERRIDES, *overrides], output_dir=".")
    data = None if group_choice("data") == "synthetic" else str(cfg.data.path)
    return {"aug": group_choice("aug"), "data": data}


class LastEpochTimer(L.Callback):
    """Times each training epoch whole, from its start to its end; after `fit` it holds the last epoch's."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.start, self.images, self.seconds = device, 0.0, 0, float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def framework_images_per_s(cfg: DictConfig, batches: int, device: torch.device) -> tuple[float, L.LightningModule]:
    """Two epochs of `batches` through `trainer.fit`; images/s of the second. Validation, checkpoints, loggers and
    the progress bar are off: they are per-epoch or cosmetic costs, not training throughput."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module, timer = build_module(cfg), LastEpochTimer(device)
    speed = [hydra.utils.instantiate(cfg.callbacks.channels_last)] if "channels_last" in cfg.callbacks else []
    trainer = hydra.utils.instantiate(
        cfg.trainer, max_epochs=2, limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer, *speed], default_root_dir=cfg.paths.output_dir,
    )  # fmt: skip
    trainer.fit(module, datamodule=hydra.utils.instantiate(cfg.data))
    return timer.images / timer.seconds, on_training_device(module, trainer)


def on_training_device(module: L.LightningModule, trainer: L.Trainer) -> L.LightningModule:
    """Lightning moves the module back to the CPU at the end of `fit`; its inference is timed where it trained."""
    return module.to(trainer.strategy.root_device)


def bare_step_images_per_s(cfg: DictConfig, settings: Settings, batches: int, crop: int, warmup: int = 5) -> float:
    """The framework's model step and nothing else: same net, optimizer, loss, precision, layout and compile."""
    device = torch.device(settings.device)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark") or False)  # as the Trainer sets it
    net = hydra.utils.instantiate(cfg.model).to(device).train()
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if settings.compile:
        net.compile()
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=net.parameters())
    images = torch.randn(cfg.data.batch_size, cfg.data.in_chans, crop, crop, device=device)
    targets = torch.randint(0, cfg.data.num_classes, (cfg.data.batch_size,), device=device)

    def step_loss() -> torch.Tensor:
        loss = F.cross_entropy(net(images), targets, label_smoothing=cfg.module.label_smoothing)
        return loss + net.regularization_loss() if hasattr(net, "regularization_loss") else loss

    return train_step_images_per_s(step_loss, optimizer, len(images), batches, warmup, device, settings.autocast)


def plain_images_per_s(cfg: DictConfig, datamodule, batches: int, device: torch.device) -> float:
    images, labels = datamodule.splits["train"]
    transform = hydra.utils.instantiate(cfg.aug.train) if cfg.aug.train is not None else None
    dataset = PlainFERDataset(images, labels, transform, datamodule.mean, datamodule.std, cfg.data.in_chans)
    net = hydra.utils.instantiate(cfg.model)  # float32, NCHW, eager: the reference scripts' model
    return plain_loop_images_per_s(
        net, hydra.utils.instantiate(cfg.optimizer), dataset, cfg.data.batch_size, cfg.data.num_workers, device,
        batches, cfg.module.label_smoothing,
    )  # fmt: skip


def inference_numbers(module: L.LightningModule, crop: int, settings: Settings) -> dict[str, float]:
    """The LitModule as trained (layout, precision, compile), uint8 faces in: batch-1 latency, batch-256 rate."""
    device = module.device
    module.eval()
    one = torch.randint(0, 256, (1, module.hparams.in_chans, crop, crop), dtype=torch.uint8, device=device)
    many = one.expand(256, -1, -1, -1).contiguous()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.autocast):
        latency = statistics.median(timed_calls(lambda: module(one), settings.repeats, warmup=10, device=device))
        batch = statistics.median(timed_calls(lambda: module(many), 5, warmup=2, device=device))
    return {"latency_ms_batch1": 1000 * latency, "infer_images_per_s_batch256": 256 / batch}


def bench_model(
    model: str, loaders: Sequence[str], overrides: Sequence[str], settings: Settings, workdir: Path
) -> list[dict]:
    """One row per data path (`loaders`); the bare step and the plain loop are measured once and shared."""
    device = torch.device(settings.device)
    cfg = compose_cfg(model, None, overrides, settings, workdir)
    set_matmul_precision(device, cfg.speed.get("matmul_precision"))  # as a training run sets it
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    full = len(datamodule.splits["train"][1]) // cfg.data.batch_size  # whole batches only: equal image counts
    batches = min(settings.batches or full, full)
    if batches < 1:
        raise ValueError(f"the train split is smaller than one batch of {cfg.data.batch_size}")
    crop = cfg.aug.crop_size or cfg.data.image_size
    shared = {"model": model, "aug": group_choice("aug"), "input": crop, "batch_size": cfg.data.batch_size}
    shared["timed_images"] = batches * cfg.data.batch_size
    shared["bare_step_images_per_s"], shared["bare_step_peak_mib"] = measured(
        device, lambda: bare_step_images_per_s(cfg, settings, batches, crop)
    )
    shared["plain_loop_images_per_s"], shared["plain_loop_peak_mib"] = measured(
        device, lambda: plain_images_per_s(cfg, datamodule, batches, device)
    )
    rows = []
    for loader in loaders or [None]:
        loader_cfg = compose_cfg(model, loader, overrides, settings, workdir)
        (speed, module), peak = measured(device, lambda c=loader_cfg: framework_images_per_s(c, batches, device))
        row = dict(shared, loader=loader or "workers", framework_images_per_s=speed, framework_peak_mib=peak)
        row["framework_efficiency"] = speed / row["bare_step_images_per_s"]
        row["framework_vs_plain"] = speed / row["plain_loop_images_per_s"]
        rows.append(row | inference_numbers(module, crop, settings))
    return rows

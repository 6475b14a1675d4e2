"""`fer-bench-loader` (`python -m fer_lightning.bench.loader`): is the data path ever the bottleneck? Images/s of
the train DataLoader alone against a bare model step.

`fer-bench-loader aug=heavy data.path=data/fer2013/fer2013.csv.gz [data.num_workers=2] [model=mini_xception]
[--batches 200]` composes the training config with the given overrides and measures, one after the other, on the
same batch size:

- `loader`: iterating the train DataLoader (decode from the cache, `aug` in `data.num_workers` workers, collation);
- `device loader`: the `data.loader=device` path: the split on the device (the GPU when there is one), each batch
  indexed and augmented there by the preset's `device` node (`BatchAugment`), no workers;
- `model step`: forward + backward + the run's optimizer (Adam by default) on one real batch (normalised, on the
  same device), as the LitModule does.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Sequence

import hydra
import torch
from omegaconf import DictConfig

from fer_lightning.bench.timing import CPU, synchronize, train_step_images_per_s
from fer_lightning.config import compose, parse_with_overrides
from fer_lightning.errors import console_script
from fer_lightning.losses import soft_cross_entropy


def loader_images_per_s(loader, batches: int, warmup: int, device: torch.device = CPU) -> float:
    """Batches after `warmup` (worker start-up is not throughput); epochs are chained when the loader is short."""
    seen, images, start = 0, 0, time.perf_counter()
    while seen < batches + warmup:
        for inputs, _ in loader:
            seen += 1
            if seen == warmup:
                synchronize(device)
                start, images = time.perf_counter(), 0
            images += inputs.shape[0]
            if seen == batches + warmup:
                break
    synchronize(device)
    return images / (time.perf_counter() - start)


def model_step_images_per_s(
    cfg: DictConfig, batch: tuple[torch.Tensor, torch.Tensor], steps: int, device: torch.device = CPU
) -> float:
    """The step the data path has to feed: uint8 batch normalised on the device, as the LitModule does, then
    forward + backward + the run's optimizer (Adam by default)."""
    net = hydra.utils.instantiate(cfg.model).train().to(device)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=net.parameters())
    images, targets = (tensor.to(device) for tensor in batch)

    def step_loss() -> torch.Tensor:
        inputs = (images.float() / 255.0 - 0.5) / 0.25
        return soft_cross_entropy(net(inputs), targets)

    return train_step_images_per_s(step_loss, optimizer, images.shape[0], steps, warmup=3, device=device)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-bench-loader", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches of each loader")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (worker start-up)")
    parser.add_argument("--steps", type=int, default=30, help="timed model steps")
    return parse_with_overrides(parser, argv)


def run(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Time the loaders and the model step, print the report; returns the rates."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        cfg = compose("train", args.overrides, output_dir=workdir)
        datamodule = hydra.utils.instantiate(cfg.data)
        started = time.perf_counter()
        datamodule.prepare_data()
        datamodule.setup("fit")
        ready = time.perf_counter() - started
        loader = datamodule.loader("train")  # the DataLoader, whatever data.loader says
        result = {"setup_s": ready, "loader": loader_images_per_s(loader, args.batches, args.warmup)}
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_device = datamodule.device_loader("train", device)
        result["device_loader"] = loader_images_per_s(on_device, args.batches, args.warmup, device)
        batch = next(iter(on_device))
        result["model_step"] = model_step_images_per_s(cfg, batch, args.steps, device)
    report(cfg, result, tuple(batch[0].shape[1:]), device)
    return result


def report(cfg: DictConfig, result: dict[str, float], shape: tuple[int, ...], device: torch.device) -> None:
    print(f"data {cfg.data.path} ({cfg.data.format}), batch {cfg.data.batch_size}, input {shape}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")  # fmt: skip
    print(f"setup (decode or cache): {result['setup_s']:.2f} s")
    print(f"train DataLoader, {cfg.data.num_workers} workers + albumentations: {result['loader']:8.0f} images/s")
    print(f"data.loader=device ({device.type}, BatchAugment):       {result['device_loader']:8.0f} images/s")
    print(f"model step ({cfg.model.name}, fwd+bwd+step, {device.type}):     {result['model_step']:8.0f} images/s")
    for name in ("loader", "device_loader"):
        print(f"{name} / model step: {result[name] / result['model_step']:.2f}")


main = console_script(run)


if __name__ == "__main__":
    main()

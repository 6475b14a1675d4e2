"""Is the data path ever the bottleneck? Images/s of the train DataLoader alone against a bare model step.

`python -m fer_lightning.data.bench_loader aug=heavy [data.num_workers=2] [model=mini_xception] [batches=200]`
composes the training config with the given overrides and measures, one after the other, on the same batch size:

- `loader`: iterating the train DataLoader (decode from the cache, `aug` in `data.num_workers` workers, collation);
- `device loader`: the `data.loader=device` path: the split on the device (the GPU when there is one), each batch
  indexed and augmented there by the preset's `device` node (`BatchAugment`), no workers;
- `model step`: forward + backward + the run's optimizer (Adam by default) on one real batch (normalised, on the
  same device), as the LitModule does.

It reads the real FER2013 (`../shared/data/fer2013/fer2013.csv.gz`) when `data.path` does not exist.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from fer_lightning.cli import CONFIG_DIR
from fer_lightning.losses import soft_cross_entropy
from fer_lightning.utils.timing import synchronize, train_step_images_per_s

REAL_FER2013 = Path(__file__).resolve().parents[3] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
OWN_ARGS = {"batches": 200, "warmup": 10, "steps": 30}
CPU = torch.device("cpu")


def compose_cfg(overrides: list[str], workdir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    paths = [f"paths.root_dir={Path.cwd()}", f"paths.output_dir={workdir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*paths, *overrides])
    if cfg.data.format == "fer2013" and not Path(cfg.data.path).exists() and REAL_FER2013.exists():
        with open_dict(cfg):
            cfg.data.path = str(REAL_FER2013)
    return cfg


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


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    own = dict(OWN_ARGS) | {k: int(v) for k, v in (a.split("=", 1) for a in argv if a.split("=")[0] in OWN_ARGS)}
    overrides = [a for a in argv if a.split("=")[0] not in OWN_ARGS]
    with tempfile.TemporaryDirectory() as workdir:
        cfg = compose_cfg(overrides, Path(workdir))
        datamodule = hydra.utils.instantiate(cfg.data)
        started = time.perf_counter()
        datamodule.prepare_data()
        datamodule.setup("fit")
        ready = time.perf_counter() - started
        loader = datamodule.loader("train")  # the DataLoader, whatever data.loader says
        result = {"setup_s": ready, "loader": loader_images_per_s(loader, own["batches"], own["warmup"])}
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_device = datamodule.device_loader("train", device)
        result["device_loader"] = loader_images_per_s(on_device, own["batches"], own["warmup"], device)
        batch = next(iter(on_device))
        result["model_step"] = model_step_images_per_s(cfg, batch, own["steps"], device)
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


if __name__ == "__main__":
    main()

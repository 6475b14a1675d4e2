"""Is the data path ever the bottleneck? Images/s of the train DataLoader alone against a bare model step.

`python -m fer_lightning.data.bench_loader aug=heavy [data.num_workers=2] [model=mini_xception] [batches=200]`
composes the training config with the given overrides and measures, one after the other, on the same batch size:

- `loader`: iterating the train DataLoader (decode from the cache, `aug` in `data.num_workers` workers, collation);
- `model step`: forward + backward + Adam on one real batch (normalised on the device), as the LitModule does.

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

REAL_FER2013 = Path(__file__).resolve().parents[3] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
OWN_ARGS = {"batches": 200, "warmup": 10, "steps": 30}


def compose_cfg(overrides: list[str], workdir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    paths = [f"paths.root_dir={Path.cwd()}", f"paths.output_dir={workdir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*paths, *overrides])
    if cfg.data.format == "fer2013" and not Path(cfg.data.path).exists() and REAL_FER2013.exists():
        with open_dict(cfg):
            cfg.data.path = str(REAL_FER2013)
    return cfg


def loader_images_per_s(loader, batches: int, warmup: int) -> float:
    """Batches after `warmup` (worker start-up is not throughput); epochs are chained when the loader is short."""
    seen, images, start = 0, 0, time.perf_counter()
    while seen < batches + warmup:
        for inputs, _ in loader:
            seen += 1
            if seen == warmup:
                start, images = time.perf_counter(), 0
            images += inputs.shape[0]
            if seen == batches + warmup:
                break
    return images / (time.perf_counter() - start)


def model_step_images_per_s(cfg: DictConfig, batch: tuple[torch.Tensor, torch.Tensor], steps: int) -> float:
    net = hydra.utils.instantiate(cfg.model).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, targets = batch
    for step in range(steps + 3):
        if step == 3:
            start = time.perf_counter()
        inputs = (images.float() / 255.0 - 0.5) / 0.25
        loss = soft_cross_entropy(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * images.shape[0] / (time.perf_counter() - start)


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
        loader = datamodule.train_dataloader()
        result = {"setup_s": ready, "loader": loader_images_per_s(loader, own["batches"], own["warmup"])}
        batch = next(iter(loader))
        result["model_step"] = model_step_images_per_s(cfg, batch, own["steps"])
    batch = f"batch {cfg.data.batch_size}, input {tuple(batch[0].shape[1:])}"
    print(f"data {cfg.data.path} ({cfg.data.format}), {batch}, {cfg.data.num_workers} workers")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"setup (decode or cache): {result['setup_s']:.2f} s")
    print(f"train DataLoader alone:        {result['loader']:8.0f} images/s")
    print(f"model step ({cfg.model.name}, fwd+bwd+Adam): {result['model_step']:8.0f} images/s")
    print(f"loader / model step: {result['loader'] / result['model_step']:.2f}")
    return result


if __name__ == "__main__":
    main()

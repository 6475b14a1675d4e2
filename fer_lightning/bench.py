"""Benchmark: training and inference speed of the framework against the bare model and a plain PyTorch loop.

`python -m fer_lightning.bench --models mini_xception resnet18 --aug heavy --out experiments/bench` prints a
Markdown table and writes `bench.json` + `bench.md`. Per model it measures, in one process:

- `bare_step`: forward + backward + optimizer step on preloaded, normalised float tensors (the ceiling);
- `framework`: a real training epoch through the framework (FER DataModule with the `aug` preset in DataLoader
  workers, Lightning loop, LitModule), and `framework / bare_step` (framework efficiency);
- `plain_loop`: the same epoch written the way the reference FER scripts do it (float32 images, per-image
  transforms and normalisation, default collation, a hand-written loop), and `framework / plain_loop`;
- inference latency for one face (batch 1, median ms) and throughput at batch 256; peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from fer_lightning.cli import CONFIG_DIR
from fer_lightning.models import create_model

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"


def compose_cfg(model: str, aug: str, data_path: str | None, workdir: Path, extra: list[str]):
    data = ["data=fer2013", f"data.path={data_path}"] if data_path else ["data=synthetic"]
    overrides = [f"model={model}", f"aug={aug}", *data, f"paths.root_dir={workdir}", f"paths.output_dir={workdir}/run"]
    overrides += [f"paths.cache_dir={Path.cwd() / 'data' / 'cache'}", *extra]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class EpochTimer(L.Callback):
    """Times training batches after a warm-up (worker start-up is not throughput)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images = warmup, 0.0, 0
        self.seconds = float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()
        if batch_idx >= self.warmup:
            self.images += batch[0].shape[0]

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds = time.perf_counter() - self.start


def framework_images_per_s(cfg, steps: int, warmup: int) -> float:
    datamodule = hydra.utils.instantiate(cfg.data)
    net = hydra.utils.instantiate(cfg.model)
    module = hydra.utils.instantiate(cfg.module, net=net, model_config={"name": cfg.model.name})
    timer = EpochTimer(warmup)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=steps + warmup, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], accelerator=cfg.trainer.accelerator, precision=cfg.trainer.precision,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return timer.images / timer.seconds


def bare_step_images_per_s(net: torch.nn.Module, shape: tuple[int, ...], num_classes: int, steps: int) -> float:
    images = torch.randn(shape)
    targets = torch.randint(0, num_classes, (shape[0],))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(steps + 3):
        if step == 3:
            start = time.perf_counter()
        loss = F.cross_entropy(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * shape[0] / (time.perf_counter() - start)


class PlainFERDataset(Dataset):
    """The reference scripts' way: float32 images, per-image augmentation and normalisation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, mean: float, std: float) -> None:
        self.images, self.labels = images.astype(np.float32) / 255.0, labels
        self.transform, self.mean, self.std = transform, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.transform(image=self.images[index])["image"] if self.transform else self.images[index]
        tensor = (torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0) - self.mean) / self.std
        return tensor, int(self.labels[index])


def plain_loop_images_per_s(cfg, steps: int, warmup: int) -> float:
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, labels = datamodule.splits["train"]
    dataset = PlainFERDataset(images, labels, datamodule.train_transform, datamodule.mean, datamodule.std)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, num_workers=cfg.data.num_workers)
    net = hydra.utils.instantiate(cfg.model).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    count, start = 0, 0.0
    for step, (inputs, targets) in enumerate(loader):
        if step == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(net(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the reference loops accumulate running loss every step
        count += inputs.shape[0] if step >= warmup else 0
        if step + 1 == steps + warmup:
            break
    return count / (time.perf_counter() - start)


def inference_numbers(net: torch.nn.Module, size: int, in_chans: int, repeats: int) -> dict[str, float]:
    net.eval()
    with torch.inference_mode():
        one = torch.randn(1, in_chans, size, size)
        latencies = []
        for _ in range(repeats + 5):
            start = time.perf_counter()
            net(one)
            latencies.append(time.perf_counter() - start)
        batch = torch.randn(256, in_chans, size, size)
        net(batch)
        start = time.perf_counter()
        for _ in range(3):
            net(batch)
        throughput = 3 * 256 / (time.perf_counter() - start)
    return {"latency_ms_batch1": 1000 * statistics.median(latencies[5:]), "infer_images_per_s_batch256": throughput}


def bench_model(model: str, args: argparse.Namespace, workdir: Path) -> dict:
    cfg = compose_cfg(model, args.aug, args.data_path, workdir, args.override)
    crop = cfg.aug.crop_size or cfg.data.image_size
    net = create_model(model, num_classes=cfg.data.num_classes, in_chans=cfg.data.in_chans)
    shape = (cfg.data.batch_size, cfg.data.in_chans, crop, crop)
    row = {"model": model, "aug": args.aug, "batch_size": cfg.data.batch_size, "input": crop}
    row["bare_step_images_per_s"] = bare_step_images_per_s(net, shape, cfg.data.num_classes, args.steps)
    row["framework_images_per_s"] = framework_images_per_s(cfg, args.steps, args.warmup)
    row["plain_loop_images_per_s"] = plain_loop_images_per_s(cfg, args.steps, args.warmup)
    row["framework_efficiency"] = row["framework_images_per_s"] / row["bare_step_images_per_s"]
    row["framework_vs_plain"] = row["framework_images_per_s"] / row["plain_loop_images_per_s"]
    row |= inference_numbers(net, crop, cfg.data.in_chans, args.repeats)
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


COLUMNS = [
    ("model", "model", "{}"), ("input", "input px", "{}"), ("bare_step_images_per_s", "bare step img/s", "{:.0f}"),
    ("framework_images_per_s", "framework img/s", "{:.0f}"), ("plain_loop_images_per_s", "plain loop img/s", "{:.0f}"),
    ("framework_efficiency", "framework / bare", "{:.2f}"), ("framework_vs_plain", "framework / plain", "{:.2f}"),
    ("latency_ms_batch1", "latency b=1 ms", "{:.2f}"), ("infer_images_per_s_batch256", "infer img/s b=256", "{:.0f}"),
    ("peak_rss_mib", "peak RSS MiB (process)", "{:.0f}"),
]  # fmt: skip


def markdown_table(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "", "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, {device}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mini_xception"])
    parser.add_argument("--aug", default="heavy")
    parser.add_argument("--data-path", default=str(REAL_DATA) if REAL_DATA.exists() else None)
    parser.add_argument("--steps", type=int, default=60, help="timed training batches per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 inference repeats")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench.json and bench.md")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. data.num_workers=1")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        rows = [bench_model(model, args, Path(workdir)) for model in args.models]
    table = markdown_table(rows, machine_description())
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
        (args.out / "bench.md").write_text(table)
    return rows


if __name__ == "__main__":
    main()

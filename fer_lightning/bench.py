"""Training and inference speed of the framework against the bare model step and a plain PyTorch loop.

`python -m fer_lightning.bench --models mini_xception resnet20 --out experiments/bench` (or `make bench`) measures,
per model and in one process, on the same number of training images for every path:

- `bare_step`: forward + backward + optimizer step on one preloaded, normalised batch already on the device, in the
  framework's precision, memory format and compile setting (the ceiling: no data, no loop);
- `framework`: an epoch through the framework, once per data path (`data.loader=workers`: albumentations in
  DataLoader workers; `device`: batched augmentation on the training device): the real FERDataModule with the `aug`
  preset, the Lightning loop and the FERLitModule, with the configured callbacks that change speed (channels_last);
  `framework / bare_step` is the framework efficiency;
- `plain_loop`: the same epoch written the way the reference FER scripts do it (`bench_plain.py`: per-image
  transforms to float32 tensors, same workers, float32 NCHW model, per-step `.item()`); `framework / plain_loop`;
- inference of the trained LitModule (uint8 in, normalisation included): median latency of one face (batch 1)
  and throughput at batch 256;
- peak memory of each training path: CUDA memory allocated, or on the CPU the main process's peak RSS (workers
  are other processes and are not counted).

Epoch paths run two epochs of `--batches` batches and time the second whole (its loader start included), so the
first warms up workers, allocators, cuDNN/oneDNN and torch.compile; the bare step warms up for 5 steps.
Writes `<out>/<machine>.json` and `<machine>.md` and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from fer_lightning.bench_plain import PlainFERDataset, plain_loop_images_per_s
from fer_lightning.callbacks.memory_format import channels_last_wanted
from fer_lightning.cli import CONFIG_DIR
from fer_lightning.utils.timing import synchronize, train_step_images_per_s


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


def compose_cfg(model: str, loader: str | None, args: argparse.Namespace, settings: Settings, workdir: Path):
    data = ["data=fer2013", f"data.path={args.data_path}"] if args.data_path else ["data=synthetic"]
    gpu = settings.device == "cuda"
    overrides = [
        f"model={model}", f"aug={args.aug}", *data, f"data.num_workers={settings.workers}",
        f"data.pin_memory={gpu}", f"trainer={'gpu' if gpu else 'cpu'}", f"trainer.precision={settings.precision}",
        f"module.compile={settings.compile}", f"callbacks.channels_last.enabled={settings.channels_last}",
        "module.scheduler=null", "logger=none", f"paths.output_dir={workdir}",
    ]  # fmt: skip
    overrides += [f"data.loader={loader}"] if loader else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        # the user's overrides last, so they win (a scheduler that needs validation, say, stays off unless asked)
        return compose(config_name="train", overrides=[*overrides, *args.override])


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


def build_module(cfg: DictConfig) -> L.LightningModule:
    net = hydra.utils.instantiate(cfg.model)
    model_config = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}
    return hydra.utils.instantiate(cfg.module, net=net, model_config=model_config)


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
    return timer.images / timer.seconds, module


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


def timed(run: Callable[[], object], device: torch.device, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def inference_numbers(module: L.LightningModule, crop: int, settings: Settings) -> dict[str, float]:
    """The LitModule as trained (layout, precision, compile), uint8 faces in: batch-1 latency, batch-256 rate."""
    device = module.device
    module.eval()
    one = torch.randint(0, 256, (1, module.hparams.in_chans, crop, crop), dtype=torch.uint8, device=device)
    many = one.expand(256, -1, -1, -1).contiguous()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.autocast):
        timed(lambda: module(one), device, 10)  # warm-up: allocator, kernel choice, compile for this shape
        latency = statistics.median(timed(lambda: module(one), device, settings.repeats))
        timed(lambda: module(many), device, 2)
        batch = statistics.median(timed(lambda: module(many), device, 5))
    return {"latency_ms_batch1": 1000 * latency, "infer_images_per_s_batch256": 256 / batch}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS; elsewhere the peak is the lifetime peak
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(device: torch.device, run: Callable[[], object]) -> tuple[object, float]:
    """`run()` and the peak memory it reached."""
    reset_peak_memory(device)
    result = run()
    return result, peak_memory_mib(device)


def bench_model(model: str, args: argparse.Namespace, settings: Settings, workdir: Path) -> list[dict]:
    """One row per data path (`--loaders`); the bare step and the plain loop are measured once and shared."""
    device = torch.device(settings.device)
    cfg = compose_cfg(model, None, args, settings, workdir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    full = len(datamodule.splits["train"][1]) // cfg.data.batch_size  # whole batches only: equal image counts
    batches = min(settings.batches or full, full)
    if batches < 1:
        raise ValueError(f"the train split is smaller than one batch of {cfg.data.batch_size}")
    crop = cfg.aug.crop_size or cfg.data.image_size
    shared = {"model": model, "aug": args.aug, "input": crop, "batch_size": cfg.data.batch_size}
    shared["timed_images"] = batches * cfg.data.batch_size
    shared["bare_step_images_per_s"], shared["bare_step_peak_mib"] = measured(
        device, lambda: bare_step_images_per_s(cfg, settings, batches, crop)
    )
    shared["plain_loop_images_per_s"], shared["plain_loop_peak_mib"] = measured(
        device, lambda: plain_images_per_s(cfg, datamodule, batches, device)
    )
    rows = []
    for loader in args.loaders or [None]:
        loader_cfg = compose_cfg(model, loader, args, settings, workdir)
        (speed, module), peak = measured(device, lambda c=loader_cfg: framework_images_per_s(c, batches, device))
        row = dict(shared, loader=loader or "workers", framework_images_per_s=speed, framework_peak_mib=peak)
        row["framework_efficiency"] = speed / row["bare_step_images_per_s"]
        row["framework_vs_plain"] = speed / row["plain_loop_images_per_s"]
        rows.append(row | inference_numbers(module, crop, settings))
    return rows


# (key, title, format) of the Markdown table; the JSON holds every key
COLUMNS = [
    ("model", "model", "{}"), ("loader", "data path", "{}"), ("input", "input px", "{}"),
    ("bare_step_images_per_s", "bare step img/s", "{:.0f}"), ("framework_images_per_s", "framework img/s", "{:.0f}"),
    ("plain_loop_images_per_s", "plain loop img/s", "{:.0f}"),
    ("framework_efficiency", "framework / bare", "{:.2f}"), ("framework_vs_plain", "framework / plain", "{:.2f}"),
    ("latency_ms_batch1", "latency b=1 ms", "{:.2f}"), ("infer_images_per_s_batch256", "infer b=256 img/s", "{:.0f}"),
    ("framework_peak_mib", "peak MiB framework", "{:.0f}"), ("plain_loop_peak_mib", "peak MiB plain", "{:.0f}"),
]  # fmt: skip


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def visible_cores() -> int:
    """The cores this process may run on (taskset, cgroups' cpusets), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> dict[str, str | int]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    name = f"gpu-{gpu}" if gpu else f"cpu-{visible_cores()}c-{cpu_name()}"
    return {
        "name": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"), "cpu": cpu_name(), "cores": visible_cores(),
        "torch_threads": torch.get_num_threads(), "gpu": gpu or "none", "torch": torch.__version__,
        "python": platform.python_version(),
    }  # fmt: skip


def markdown(rows: list[dict], host: dict, settings: Settings, args: argparse.Namespace) -> str:
    data = args.data_path or "synthetic (data=synthetic)"
    lines = [
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['torch_threads']} torch threads, GPU: {host['gpu']}, "
        f"torch {host['torch']}.",
        f"Settings: {settings.device}, {settings.precision}, channels_last {settings.channels_last}, "
        f"compile {settings.compile}, {settings.workers} workers, aug={args.aug}, data {data}, "
        f"{rows[0]['timed_images'] if rows else 0} timed images per training path.",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_from(args: argparse.Namespace) -> Settings:
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if device == "cuda" else "32-true")
    layout = {"on": True, "off": False}.get(args.channels_last, "auto")
    workers = args.workers if args.workers is not None else min(8, visible_cores())
    return Settings(
        device=device, precision=precision, channels_last=channels_last_wanted(layout, torch.device(device)),
        compile=args.compile, workers=workers, batches=args.batches, repeats=args.repeats,
    )  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mini_xception"])
    parser.add_argument("--aug", default="heavy", help="aug preset of every path")
    parser.add_argument("--data-path", default=None, help="a FER2013 CSV; default: the embedded synthetic data")
    parser.add_argument("--loaders", nargs="*", default=["workers", "device"], help="data.loader values to time")
    parser.add_argument("--batches", type=int, default=0, help="timed training batches per path; 0 = an epoch")
    parser.add_argument("--repeats", type=int, default=50, help="timed batch-1 inference calls")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers; default min(8, cores)")
    parser.add_argument("--precision", default="auto", choices=["auto", "32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (module.compile)")
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU is present")
    parser.add_argument("--out", type=Path, default=None, help="folder for <name>.json and <name>.md")
    parser.add_argument("--name", default=None, help="file name stem; default: the machine's")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per path: no banners
    settings, host = settings_from(args), machine()
    with tempfile.TemporaryDirectory() as workdir:
        rows = [row for model in args.models for row in bench_model(model, args, settings, Path(workdir))]
    table = markdown(rows, host, settings, args)
    print(table)
    result = {"machine": host, "settings": asdict(settings), "aug": args.aug, "data": args.data_path, "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.name or host["name"]
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(table)
        print(f"wrote {args.out / stem}.json and .md")
    return result


if __name__ == "__main__":
    main()

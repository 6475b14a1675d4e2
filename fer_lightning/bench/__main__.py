"""`fer-bench` (`python -m fer_lightning.bench`, `make bench`): training and inference speed of the framework
against the bare model step and a plain PyTorch loop, on the machine it runs on (the paths: `framework.py`).

`fer-bench --models mini_xception resnet20 --out experiments/bench [key=value ...]`: the trailing Hydra overrides
apply to every path (default `data=synthetic aug=heavy`; `data=fer2013 data.path=...` for the real file).
Writes `<out>/<machine>.json` and `<machine>.md` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from fer_lightning.bench.framework import Settings, bench_model, describe
from fer_lightning.bench.machine import machine, visible_cores
from fer_lightning.callbacks.memory_format import channels_last_wanted
from fer_lightning.config import parse_with_overrides
from fer_lightning.errors import console_script
from fer_lightning.speed import resolve_precision

# (key, title, format) of the Markdown table; the JSON holds every key
COLUMNS = [
    ("model", "model", "{}"), ("loader", "data path", "{}"), ("input", "input px", "{}"),
    ("bare_step_images_per_s", "bare step img/s", "{:.0f}"), ("framework_images_per_s", "framework img/s", "{:.0f}"),
    ("plain_loop_images_per_s", "plain loop img/s", "{:.0f}"),
    ("framework_efficiency", "framework / bare", "{:.2f}"), ("framework_vs_plain", "framework / plain", "{:.2f}"),
    ("latency_ms_batch1", "latency b=1 ms", "{:.2f}"), ("infer_images_per_s_batch256", "infer b=256 img/s", "{:.0f}"),
    ("framework_peak_mib", "peak MiB framework", "{:.0f}"), ("plain_loop_peak_mib", "peak MiB plain", "{:.0f}"),
]  # fmt: skip


def markdown(rows: list[dict], host: dict, settings: Settings, run: dict) -> str:
    data = run["data"] or "synthetic (data=synthetic)"
    lines = [
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['torch_threads']} torch threads, GPU: {host['gpu']}, "
        f"torch {host['torch']}.",
        f"Settings: {settings.device}, {settings.precision}, channels_last {settings.channels_last}, "
        f"compile {settings.compile}, {settings.workers} workers, aug={run['aug']}, data {data}, "
        f"{rows[0]['timed_images'] if rows else 0} timed images per training path.",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_from(args: argparse.Namespace) -> Settings:
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    precision = resolve_precision(args.precision, torch.device(device))  # the train config's `auto` rule
    layout = {"on": True, "off": False}.get(args.channels_last, "auto")
    workers = args.workers if args.workers is not None else min(8, visible_cores())
    return Settings(
        device=device, precision=precision, channels_last=channels_last_wanted(layout, torch.device(device)),
        compile=args.compile, workers=workers, batches=args.batches, repeats=args.repeats,
    )  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mini_xception"])
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
    return parse_with_overrides(parser, argv)


def run(argv: Sequence[str] | None = None) -> dict:
    """Measure every model and path, print the table (and write it with `--out`); returns what the JSON holds."""
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per path: no banners
    settings, host, run = settings_from(args), machine(), describe(args.overrides)
    with tempfile.TemporaryDirectory() as workdir:
        rows = [
            row
            for model in args.models
            for row in bench_model(model, args.loaders, args.overrides, settings, Path(workdir))
        ]
    table = markdown(rows, host, settings, run)
    print(table)
    result = {"machine": host, "settings": asdict(settings), **run, "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.name or host["name"]
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(table)
        print(f"wrote {args.out / stem}.json and .md")
    return result


main = console_script(run)


if __name__ == "__main__":
    main()

"""Training speed of every registered model on this machine: the img/s column of docs/model_zoo.md.

    python -m fer_lightning.bench.zoo --out docs/model_zoo_speed.json [--models resnet18 vgg13] [--steps 3]
    python -m fer_lightning.models.table --out docs/model_zoo.md   # then reads the file into the table

Each model's bare training step (forward, fp32 loss, backward, Adam) on random 48x48 grey batches of 64, timed
in every setting the speed autotune would try here (fp32 / bf16 where native, NCHW / channels_last): the same
`fer_lightning.speed.autotune` a run with `speed.autotune=true` calls, so the column says what each model trains at
in its best setting on this machine, data loading and evaluation not counted. A few steps per setting (the
autotune's own count is 3): enough to rank settings and sizes, not a precise benchmark (`make bench` is that).
Models are measured one after another in one process; a measurement beside another busy process is noise, and the
JSON records the machine, torch and the time so that the table says where its numbers come from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

from fer_lightning.bench.machine import cpu_name, visible_cores
from fer_lightning.models import create_model, list_models
from fer_lightning.speed import autotune, candidate_settings

NUM_CLASSES, IN_CHANS, INPUT_SIZE, BATCH_SIZE = 7, 1, 48, 64
log = logging.getLogger(__name__)


def model_speed(name: str, device: torch.device, steps: int, warmup: int) -> dict:
    """The autotune's timings of one model: img/s per setting and the fastest setting's label."""
    net = create_model(name, num_classes=NUM_CLASSES, in_chans=IN_CHANS)
    candidates = candidate_settings("auto", "auto", False, device, BATCH_SIZE, net)
    optimizer = partial(torch.optim.Adam, lr=1e-3)
    shape = (BATCH_SIZE, IN_CHANS, INPUT_SIZE, INPUT_SIZE)
    result = autotune(net, candidates, shape, NUM_CLASSES, optimizer, device, steps=steps, warmup=warmup)
    measured = datetime.datetime.now().isoformat(timespec="minutes")
    return {"images_per_s": result.images_per_s, "best": result.choice.label, "measured": measured}


def measure_zoo(names: Sequence[str], steps: int, warmup: int, device: torch.device) -> dict:
    started = time.perf_counter()
    models = {}
    for name in names:
        models[name] = model_speed(name, device, steps, warmup)
        best = models[name]["best"]
        print(f"{name}: {models[name]['images_per_s'][best]:,.1f} img/s ({best})", flush=True)
    return {
        "machine": f"{cpu_name()}, {visible_cores()} cores, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "measured": datetime.datetime.now().isoformat(timespec="minutes"),
        "batch_size": BATCH_SIZE,
        "steps": steps,
        "warmup": warmup,
        "seconds": round(time.perf_counter() - started),
        "models": models,
    }


def updated(kept: dict, remeasured: dict) -> dict:
    """`kept` with `remeasured`'s rows put in: only a record of the same machine, torch and step counts."""
    same = ("machine", "torch", "batch_size", "steps", "warmup")
    differing = [key for key in same if kept.get(key) != remeasured[key]]
    if differing:
        raise SystemExit(f"--update: the new measurement differs from the file's in {differing}; measure all again")
    return kept | {"models": kept["models"] | remeasured["models"], "updated": remeasured["measured"]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-bench-zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (docs/model_zoo_speed.json)")
    parser.add_argument("--models", nargs="+", help="registered names (default: every model)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setting first")
    parser.add_argument(
        "--update", action="store_true", help="re-measure --models only, keeping --out's other rows (same machine)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models or []) - set(list_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; registered: {', '.join(list_models())}")
    speeds = measure_zoo(args.models or list_models(), args.steps, args.warmup, torch.device("cpu"))
    if args.update:
        speeds = updated(json.loads(args.out.read_text()), speeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(speeds, indent=2) + "\n")
    print(f"wrote {args.out} ({speeds['seconds']} s)")


if __name__ == "__main__":
    main()

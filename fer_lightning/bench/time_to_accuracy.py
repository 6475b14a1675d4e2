"""`fer-time-to-accuracy` (`python -m fer_lightning.bench.time_to_accuracy`): time to PublicTest accuracy, raced.

How soon the framework reaches each PublicTest accuracy, against the seed-style plain loop (`plain.py`) given the
same training budget in the same command, so the speed-up is a ratio measured side by side, one arm after the other
on the same machine.

    python -m fer_lightning.bench.time_to_accuracy --budget-min 30 --out experiments/time_to_accuracy \
        experiment=quickstart data=fer2013 data.path=data/fer2013/fer2013.csv.gz trainer.max_epochs=1000

The trailing Hydra overrides compose the framework arm's train config (default: conf/train.yaml's real FER2013);
`fer_lightning.training.run_training` trains it, selects the checkpoint on PublicTest (val) and tests PrivateTest
(test). The plain arm takes from the same config only what is not an engineering choice: the data and its
normalisation, the aug preset's albumentations (per image, in `data.num_workers` workers), the model, the seed, and
the trainer's limit_*_batches (so a debug run limits both arms alike); it keeps the reference scripts' batch 64,
Adam 1e-3, fp32 NCHW, no schedule, no label smoothing, single-view evaluation. It does not take trainer.max_epochs
(a recipe's schedule length, not a budget): it trains for the whole budget unless --plain-max-epochs caps it.

One clock for both arms: seconds inside training epochs, from the epoch's start (its data loading and augmentation
included) to its end or to the validation that interrupts it; evaluation and checkpointing are not counted. Each arm
trains until that clock reaches the budget (mid-epoch, after the step that crosses it) or its max epochs, evaluating
PublicTest after every epoch and at the stop. The framework's clock is its own `TrainingClock` callback
(`time/train_s`, `time/images_seen` in csv/metrics.csv), given the budget; the plain loop's is the same clock written
into the loop (`plain.plain_epoch`'s budget). `trainer.max_time` is only a
backstop (twice the budget plus a minute): it also counts validation, so as the budget it would shortchange the
framework.

Writes <out>/results.json, results.md (printed at the end) and time_to_accuracy.png; the framework's run directory
is <out>/framework (checkpoints, metrics.json, csv/metrics.csv).
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import gc
import json
import math
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import albumentations as A
import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fer_lightning.bench.machine import machine
from fer_lightning.bench.plain import PlainFERDataset, evaluate, plain_epoch
from fer_lightning.callbacks.training_clock import IMAGES_SEEN, TRAIN_SECONDS
from fer_lightning.config import compose, group_choice, parse_with_overrides
from fer_lightning.errors import console_script
from fer_lightning.training import run_training

MODULE = "fer_lightning.bench.time_to_accuracy"  # not __name__, which is __main__ under `python -m`
ARMS = ("framework", "plain")
THRESHOLDS = (0.55, 0.60, 0.65, 0.68, 0.70)
PLAIN_BATCH_SIZE, PLAIN_LR = 64, 1e-3  # the reference scripts' (issue 14)
CLOCK, IMAGES = TRAIN_SECONDS, IMAGES_SEEN  # what TrainingClock logs beside val/acc
Curve = list[list[float]]  # [train_s, images_seen, val_acc] per PublicTest evaluation


# --- the curve and what is read off it (pure functions) ---


def threshold_key(threshold: float) -> str:
    return f"{threshold:g}"


def time_to(curve: Curve, threshold: float, axis: int = 0) -> float | None:
    """`axis` (0: train_s, 1: images_seen) of the first evaluation at or above `threshold`, else None. No
    interpolation between evaluations: every time reported is one at which the accuracy was measured."""
    return next((point[axis] for point in curve if point[2] >= threshold), None)


def summary(curve: Curve, test_acc: float | None, epochs: int, thresholds: Sequence[float], **extra) -> dict:
    return {
        "curve": curve,
        "time_to": {threshold_key(t): time_to(curve, t) for t in thresholds},
        "images_to": {threshold_key(t): time_to(curve, t, axis=1) for t in thresholds},
        "best_val_acc": max((point[2] for point in curve), default=None),
        "test_acc": test_acc,
        "epochs": epochs,
        "train_s": curve[-1][0] if curve else 0.0,
        **extra,
    }


def ratio(plain_s: float | None, framework_s: float | None, plain_total_s: float) -> tuple[float | None, bool]:
    """plain / framework time to one threshold, and whether it is only a lower bound (plain never got there, so its
    time exceeds its whole training time); None where the framework never got there."""
    if framework_s is None or framework_s <= 0:
        return None, False
    if plain_s is None:
        return plain_total_s / framework_s, True
    return plain_s / framework_s, False


def ratio_text(value: float | None, lower_bound: bool) -> str:
    return "—" if value is None else f"{'> ' if lower_bound else ''}{value:.2f}x"


def ratios(plain: dict, framework: dict) -> dict[str, dict]:
    table = {}
    for key, framework_s in framework["time_to"].items():
        value, lower_bound = ratio(plain["time_to"].get(key), framework_s, plain["train_s"])
        table[key] = {"plain_over_framework": value, "lower_bound": lower_bound, "text": ratio_text(value, lower_bound)}
    return table


def read_curve(metrics_csv: Path) -> Curve:
    """The fit's PublicTest evaluations in a run's csv/metrics.csv: the rows TrainingClock wrote its clock to."""
    if not metrics_csv.exists():
        raise FileNotFoundError(f"{metrics_csv} is missing: the framework arm needs the CSV logger (logger=csv)")
    with metrics_csv.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get(CLOCK) and row.get("val/acc")]
    return [[float(row[CLOCK]), float(row[IMAGES]), float(row["val/acc"])] for row in rows]


# --- the arms ---


def hms(seconds: float) -> str:
    """Lightning's max_time string, DD:HH:MM:SS (whole seconds)."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def framework_overrides(overrides: Sequence[str], budget_s: float) -> list[str]:
    """The user's overrides between the CSV logger (the curve's source; a user's logger choice wins) and the race's
    own settings: the budget clock, min_epochs 0 so it may stop within the first epoch, max_time as the backstop."""
    clock = "++callbacks.training_clock"
    return [
        "logger=csv", *overrides,
        f"{clock}._target_=fer_lightning.callbacks.TrainingClock", f"{clock}.budget_s={budget_s}",
        "++trainer.min_epochs=0", f"++trainer.max_time={hms(2 * budget_s + 60)}",
    ]  # fmt: skip


def framework_arm(overrides: Sequence[str], budget_s: float, thresholds: Sequence[float], run_dir: Path) -> dict:
    cfg = compose("train", framework_overrides(overrides, budget_s), output_dir=run_dir)
    metrics = run_training(cfg)
    curve = read_curve(run_dir / "csv" / "metrics.csv")
    return summary(
        curve, metrics.get("test/acc"), int(metrics["epochs"]), thresholds,
        run_dir=str(run_dir), selected_checkpoint=metrics.get("best_checkpoint"),
    )  # fmt: skip


def batch_limit(value: float | int | None, batches: int) -> int:
    """A Lightning limit_*_batches as a batch count for the plain loop (0 = every batch)."""
    if value is None or (isinstance(value, float) and value >= 1.0):
        return 0
    return int(value) if isinstance(value, int) else max(1, int(value * batches))


def plain_loaders(cfg: DictConfig, datamodule) -> dict[str, DataLoader]:
    """The reference scripts' loaders over the datamodule's arrays and normalisation: the aug preset's train
    transform; at eval its eval transform and the center crop the framework's single view takes."""
    mean, std, chans, workers = datamodule.mean, datamodule.std, cfg.data.in_chans, cfg.data.num_workers
    train_transform = hydra.utils.instantiate(cfg.aug.train) if cfg.aug.get("train") is not None else None
    train = PlainFERDataset(*datamodule.splits["train"], train_transform, mean, std, chans)
    loaders = {"train": DataLoader(train, batch_size=PLAIN_BATCH_SIZE, shuffle=True, num_workers=workers)}
    steps = [hydra.utils.instantiate(cfg.aug.eval)] if cfg.aug.get("eval") is not None else []
    steps += [A.CenterCrop(datamodule.crop_size, datamodule.crop_size)] if datamodule.crop_size else []
    view = A.Compose(steps) if steps else None
    for split in ("val", "test"):
        dataset = PlainFERDataset(*datamodule.splits[split], view, mean, std, chans)
        loaders[split] = DataLoader(dataset, batch_size=datamodule.eval_batch_size, num_workers=workers)
    return loaders


def race_plain(net, optimizer, loaders: dict[str, DataLoader], device, budget_s: float, max_epochs: float,
               limits: dict[str, int]) -> tuple[Curve, dict]:  # fmt: skip
    """Epochs until `budget_s` seconds of training (the last cut mid-epoch) or `max_epochs`, PublicTest after each;
    returns the curve and the best-PublicTest weights (the first of equals, as ModelCheckpoint keeps)."""
    curve, best_acc, best_state, spent, seen = [], -1.0, None, 0.0, 0
    while spent < budget_s and len(curve) < max_epochs:
        images, seconds = plain_epoch(net, loaders["train"], optimizer, device, limits["train"], 0.0, budget_s - spent)
        spent, seen = spent + seconds, seen + images
        accuracy = evaluate(net, loaders["val"], device, limits["val"])
        curve.append([spent, float(seen), accuracy])
        print(f"plain epoch {len(curve)}: {spent:.1f} s, {seen} images, PublicTest {accuracy:.4f}", flush=True)
        if accuracy > best_acc:
            best_acc, best_state = accuracy, copy.deepcopy(net.state_dict())
    return curve, best_state


def plain_arm(
    overrides: Sequence[str], budget_s: float, thresholds: Sequence[float], run_dir: Path, max_epochs: float = math.inf
) -> dict:
    cfg = compose("train", overrides, output_dir=run_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    accelerator = cfg.trainer.get("accelerator")
    device = torch.device("cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu")
    net = hydra.utils.instantiate(cfg.model).to(device)  # float32, NCHW, eager: the reference scripts' model
    optimizer = torch.optim.Adam(net.parameters(), lr=PLAIN_LR)
    loaders = plain_loaders(cfg, datamodule)
    limits = {split: batch_limit(cfg.trainer.get(f"limit_{split}_batches"), len(loaders[split])) for split in loaders}
    curve, best_state = race_plain(net, optimizer, loaders, device, budget_s, max_epochs, limits)
    net.load_state_dict(best_state)
    return summary(curve, evaluate(net, loaders["test"], device, limits["test"]), len(curve), thresholds)


# --- the outputs ---


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.2f}"


def markdown(results: dict) -> str:
    keys = [threshold_key(t) for t in results["thresholds"]]
    head = ["arm", "best PublicTest", "PrivateTest (selected on PublicTest)", "epochs", "train min"]
    head += [f"min to {100 * t:g}%" for t in results["thresholds"]]
    host, run = results["machine"], results["run"]
    lines = [
        f"Time to PublicTest accuracy, {results['budget_min']:g} min of training per arm: model {run['model']}, "
        f"aug {run['aug']}, data {run['data']}; {host['cpu']}, {host['cores']} cores, torch {results['torch']}, "
        f"{results['date']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for name, arm in results["arms"].items():
        cells = [name, percent(arm["best_val_acc"]), percent(arm["test_acc"]), str(arm["epochs"])]
        cells += [minutes(arm["train_s"]), *(minutes(arm["time_to"][key]) for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    if "ratios" in results:
        cells = ["plain / framework time", "", "", "", "", *(results["ratios"][key]["text"] for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Minutes of training: the epochs' own time, data loading included, evaluation not; a time to a threshold is",
        "the first PublicTest evaluation at or above it (— never reached). The ratio is measured side by side in this",
        "run; `> r` where the plain loop never got there: its whole training time over the framework's.",
        f"Command: `{results['command']}`",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    by_time, by_images = figure.subplots(1, 2, sharey=True)
    for name, arm in results["arms"].items():
        train_s, images, accuracy = zip(*arm["curve"]) if arm["curve"] else ((), (), ())
        by_time.plot([s / 60 for s in train_s], accuracy, marker="o", markersize=3, label=name)
        by_images.plot(images, accuracy, marker="o", markersize=3, label=name)
    for axes in (by_time, by_images):
        for threshold in results["thresholds"]:
            axes.axhline(threshold, linestyle=":", color="grey", linewidth=0.8)
            axes.annotate(f"{100 * threshold:g}%", (1, threshold), xycoords=("axes fraction", "data"), fontsize=7,
                          color="grey", ha="right", va="bottom")  # fmt: skip
        axes.set_xlim(left=0)  # from the start of training: the time an arm took, not only the span it covered
        axes.grid(alpha=0.3)
    by_time.set(xlabel="training minutes", ylabel="PublicTest accuracy")
    by_images.set(xlabel="training images seen")
    by_time.legend()
    figure.suptitle(f"Time to accuracy, {results['run']['model']}, {results['budget_min']:g} min budget per arm")
    figure.savefig(path, dpi=120)


def write_outputs(results: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table)
    plot(results, out / "time_to_accuracy.png")
    return table


# --- the command ---


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-time-to-accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="training minutes per arm (default 30)")
    default_out = Path("logs/time_to_accuracy") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=default_out, help="results folder (default under logs/)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="run one after the other")
    parser.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS), help="PublicTest accuracies")
    parser.add_argument(
        "--plain-max-epochs", type=int, default=None, help="cap the plain arm's epochs (tests, debugging; default none)"
    )
    args = parse_with_overrides(parser, argv)
    if args.budget_min <= 0:
        parser.error("--budget-min must be positive")
    args.arms = list(dict.fromkeys(args.arms))
    return args


def describe(overrides: Sequence[str], out: Path) -> dict[str, str | None]:
    cfg = compose("train", overrides, output_dir=out)
    return {"model": group_choice("model"), "aug": group_choice("aug"), "data": str(cfg.data.path)}


def run(argv: Sequence[str] | None = None) -> dict:
    """The race; returns results.json's content (what tests call)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    framework_dir = args.out / "framework"
    if "framework" in args.arms and framework_dir.exists() and any(framework_dir.iterdir()):
        raise SystemExit(f"{framework_dir} is not empty (an earlier race?): choose another --out or remove it")
    results = {
        "budget_min": args.budget_min, "thresholds": args.thresholds, "date": datetime.now().isoformat("T", "seconds"),
        "torch": torch.__version__, "machine": machine(), "run": describe(args.overrides, args.out),
        "command": shlex.join(["python", "-m", MODULE, *argv]), "overrides": args.overrides,
    }  # fmt: skip
    results["arms"] = {}
    plain_max_epochs = args.plain_max_epochs or math.inf
    for arm in args.arms:  # one after the other: concurrent arms would share (and slow) the same cores
        run = framework_arm if arm == "framework" else functools.partial(plain_arm, max_epochs=plain_max_epochs)
        results["arms"][arm] = run(args.overrides, 60 * args.budget_min, args.thresholds, args.out / arm)
        gc.collect()  # the framework's persistent workers and datamodule go before the next arm starts
    if {"framework", "plain"} <= results["arms"].keys():
        results["ratios"] = ratios(results["arms"]["plain"], results["arms"]["framework"])
    table = write_outputs(results, args.out)
    print(f"\n{table}\nwrote {args.out}/results.json, results.md and time_to_accuracy.png")
    return results


main = console_script(run)


if __name__ == "__main__":
    main()

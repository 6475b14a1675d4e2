"""Calibrated probabilities: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T > 0 divides the logits before the softmax: `softmax(logits / T)`. It is fitted by minimising the
negative log-likelihood (NLL) of the validation split over T, with the network frozen; the argmax, hence accuracy,
F1 and the confusion matrix, is unchanged. The NLL is convex in 1/T, hence unimodal in log T: a golden-section search
over log T in TEMPERATURE_BOUNDS, in float64, finds its minimum to ~1e-9 relative without a learning rate or
a starting point to tune (LBFGS on log T reaches the same point, but can stall or overshoot on separable data).

The logits calibrated are those eval produces: a TTA transform's views are averaged as logits by the LitModule's
forward before any softmax, so T applies to the view-averaged logits, as predict and export apply it to their
single view. T is stored as `hyper_parameters.preprocessing["temperature"]` (absent = 1) of a new checkpoint.

Calibration is measured by the expected calibration error (ECE: 15 equal-width confidence bins, the L1 gap between
each bin's accuracy and mean confidence weighted by its share of images; torchmetrics' MulticlassCalibrationError)
and shown by a reliability diagram.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassCalibrationError

from fer_lightning.checkpoint import read_checkpoint, save_checkpoint
from fer_lightning.errors import UserError
from fer_lightning.losses import hard_targets

log = logging.getLogger(__name__)

N_BINS = 15
# T outside this range means the model's logits are nearly meaningless (T -> inf) or the split is separable (T -> 0)
TEMPERATURE_BOUNDS = (0.01, 100.0)
GOLDEN = (math.sqrt(5) - 1) / 2


class CalibrationError(UserError):
    """A temperature that cannot be used (not a finite number > 0), or data a temperature cannot be fitted on."""


def check_temperature(value: object, source: str = "temperature") -> float:
    """`value` as a float, refused unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise CalibrationError(f"{source}={value!r}: a temperature must be a finite number > 0")
    return float(value)


def checkpoint_temperature(preprocessing: dict | None, path: str | Path = "checkpoint") -> float:
    """The temperature a checkpoint's preprocessing stores; 1.0 (the logits unchanged) when it stores none."""
    value = (preprocessing or {}).get("temperature")
    if value is None:
        return 1.0
    return check_temperature(value, f"{path}: preprocessing.temperature")


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of softmax(logits / T) against class indices or (FER+) class probabilities, in float64."""
    targets = targets.double() if targets.is_floating_point() else targets.long()
    return float(F.cross_entropy(logits.double() / temperature, targets))


def fit_temperature(
    logits: torch.Tensor, targets: torch.Tensor, bounds: tuple[float, float] = TEMPERATURE_BOUNDS, tol: float = 1e-8
) -> float:
    """The T in `bounds` that minimises nll(logits, targets, T): golden-section search over log T, until the
    bracket is `tol` wide (T known to a relative `tol`: 40 steps from the default bounds)."""
    if logits.ndim != 2 or len(logits) == 0:
        raise CalibrationError(f"a temperature is fitted on (N, classes) logits of N >= 1 images, got {logits.shape}")
    if not torch.isfinite(logits).all():
        raise CalibrationError("the logits hold NaN or inf: no temperature can be fitted (is the checkpoint broken?)")
    logits, lo, hi = logits.double(), math.log(bounds[0]), math.log(bounds[1])

    def loss(log_t: float) -> float:
        return nll(logits, targets, math.exp(log_t))

    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    loss_a, loss_b = loss(a), loss(b)
    while hi - lo > tol:  # the bracket shrinks by 0.618 a step
        if loss_a <= loss_b:
            hi, b, loss_b = b, a, loss_a
            a = hi - GOLDEN * (hi - lo)
            loss_a = loss(a)
        else:
            lo, a, loss_a = a, b, loss_b
            b = lo + GOLDEN * (hi - lo)
            loss_b = loss(b)
    temperature = check_temperature(math.exp((lo + hi) / 2), "the fitted temperature")
    if min(abs(math.log(temperature / bound)) for bound in bounds) < 1e-3:
        log.warning("the fitted temperature %.4g is at the bound of %s: the fit is not reliable", temperature, bounds)
    return temperature


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE over `n_bins` equal-width confidence bins (torchmetrics; hard labels: soft ones' argmax)."""
    metric = MulticlassCalibrationError(probs.shape[-1], n_bins=n_bins, norm="l1")
    return float(metric(probs.double(), hard_targets(targets).long()))


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin [i/n, (i+1)/n): image count, mean confidence and accuracy (0 where empty)."""
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == hard_targets(targets)).double()
    index = (confidence * n_bins).long().clamp(0, n_bins - 1).numpy()  # a confidence of 1.0 in the last bin
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    sums = [np.bincount(index, weights=values.numpy(), minlength=n_bins) for values in (confidence, correct)]
    mean_conf, accuracy = (np.divide(s, count, out=np.zeros(n_bins), where=count > 0) for s in sums)
    return {"count": count, "confidence": mean_conf, "accuracy": accuracy}


def plot_reliability(panels: Sequence[tuple[str, torch.Tensor]], targets: torch.Tensor, path: Path) -> Path:
    """A reliability diagram per (title, probabilities) panel, side by side: each bin's accuracy against the
    diagonal of perfect calibration, the gap to its mean confidence in red, its share of images below."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    edges = np.linspace(0, 1, N_BINS + 1)
    width = edges[1] - edges[0]
    for ax, (title, probs) in zip(axes[0], panels, strict=True):
        bins = reliability_bins(probs, targets)
        filled = bins["count"] > 0
        ax.bar(edges[:-1], bins["accuracy"], width, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
        gap = bins["confidence"] - bins["accuracy"]
        ax.bar(edges[:-1][filled], gap[filled], width, bottom=bins["accuracy"][filled], align="edge", color="tab:red",
               alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        share = bins["count"] / max(bins["count"].sum(), 1)
        ax.bar(
            edges[:-1],
            -0.1 * share / max(share.max(), 1e-12),
            width,
            align="edge",
            color="gray",
            label="images (scaled)",
        )
        ece = expected_calibration_error(probs, targets)
        ax.set(xlim=(0, 1), ylim=(-0.1, 1), xlabel="confidence (top-class probability)", ylabel="accuracy")
        ax.set_title(f"{title}\nECE {ece:.4f} ({N_BINS} bins, {len(targets)} images)", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def split_calibration(
    split: str, logits: torch.Tensor, targets: torch.Tensor, temperature: float, fitted: float | None, out_dir: Path
) -> dict[str, float]:
    """`<split>/ece` and `<split>/nll` of the probabilities the checkpoint gives, softmax(logits / its temperature),
    and with a `fitted` temperature `<split>/ece_calibrated` and `<split>/nll_calibrated`; `reliability_<split>.png`
    with a panel for each."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    metrics = {
        f"{split}/ece": expected_calibration_error(probs, targets),
        f"{split}/nll": nll(logits, targets, temperature),
    }
    stored = "uncalibrated" if temperature == 1.0 else f"the checkpoint's T = {temperature:.4g}"
    panels = [(f"{split}: {stored}", probs)]
    if fitted is not None:
        calibrated = torch.softmax(logits.double() / fitted, dim=-1)
        metrics[f"{split}/ece_calibrated"] = expected_calibration_error(calibrated, targets)
        metrics[f"{split}/nll_calibrated"] = nll(logits, targets, fitted)
        panels.append((f"{split}: calibrated, T = {fitted:.4g} (fitted on val)", calibrated))
    plot_reliability(panels, targets, out_dir / f"reliability_{split}.png")
    return metrics


def calibrated_checkpoint_path(ckpt_path: str | Path, output: str | Path | None = None) -> Path:
    """`output`, else `<name>.calibrated.ckpt` next to the checkpoint; never the checkpoint itself."""
    source = Path(ckpt_path)
    path = Path(output) if output else source.with_name(f"{source.stem}.calibrated{source.suffix or '.ckpt'}")
    if path.resolve() == source.resolve():
        raise CalibrationError(f"the calibrated checkpoint {path} would overwrite the checkpoint evaluated")
    return path


def write_calibrated_checkpoint(
    ckpt_path: str | Path, temperature: float, info: dict, output: str | Path | None = None
) -> Path:
    """A copy of the checkpoint with `preprocessing["temperature"]` set (and `info` as its top-level
    `calibration`: where T was fitted), written atomically; the checkpoint itself is never touched."""
    path = calibrated_checkpoint_path(ckpt_path, output)
    checkpoint = read_checkpoint(ckpt_path)
    hparams = checkpoint["hyper_parameters"]
    preprocessing = dict(hparams.get("preprocessing") or {})
    hparams["preprocessing"] = preprocessing | {"temperature": check_temperature(temperature)}
    checkpoint["calibration"] = dict(info)  # top level: Lightning passes hyper_parameters to __init__, not this
    partial = path.with_name(f".{path.name}.partial")
    try:
        save_checkpoint(checkpoint, partial)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CalibrationError(
            f"cannot write the calibrated checkpoint {path} ({error.strerror or error}): "
            f"choose another place with calibrated_ckpt_path=/path/to/model.calibrated.ckpt"
        ) from None
    return path


class LogitCollector(L.Callback):
    """The logits eval's test loop computes (the LitModule's forward: TTA views averaged as logits) and their labels,
    caught by a forward hook, so calibration costs no second pass over the data. Under DDP `collected` gathers
    every rank's shard (all ranks then hold the whole split, in rank order)."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None
        self.hook = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.logits, self.targets = [], []
        self.hook = pl_module.register_forward_hook(self.keep)

    def keep(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.last = output.detach().float().cpu()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.logits.append(self.last)
        self.targets.append(batch[1].detach().cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None

    def collected(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        pair = (torch.cat(self.logits), torch.cat(self.targets))
        if trainer.world_size > 1:
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, pair)
            pair = tuple(torch.cat(parts) for parts in zip(*gathered, strict=True))
        return pair

"""Resumable runs: a checkpoint when a fit is interrupted, and the RNG state inside every checkpoint.

Lightning restores the model, optimizer, schedulers, loops and callback states from `ckpt_path`, but not the random
number generators, so without `RNGStateCheckpoint` a resumed run shuffles and drops out differently from an
uninterrupted one. RNG states are stored as tensors and plain tuples: checkpoints stay loadable with
`weights_only=True`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    """Save `<dirpath>/<filename>.ckpt` when a fit is stopped by Ctrl-C or SIGTERM (a cluster's pre-emption).

    Lightning turns SIGTERM into `SIGTERMException` at the next batch boundary (on every rank) and Ctrl-C into
    `KeyboardInterrupt`; both reach `on_exception`. Other errors are bugs, not interruptions: no checkpoint then.
    Resuming in the same run directory (`hydra.run.dir`) lets ModelCheckpoint carry on its best-so-far tracking;
    Lightning resets it when the checkpoint directory changes.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted", run_dir: str | None = None) -> None:
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")
        self.run_dir = run_dir

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        trainer.save_checkpoint(self.ckpt_path)  # every rank calls it (a barrier); rank 0 writes
        if trainer.is_global_zero:
            resume = f"ckpt_path={self.ckpt_path}" + (f" hydra.run.dir={self.run_dir}" if self.run_dir else "")
            log.warning(
                "%s (epoch %d, global step %d): checkpoint saved to %s\nResume with the same overrides plus: %s",
                type(exception).__name__,
                trainer.current_epoch,
                trainer.global_step,
                self.ckpt_path,
                resume,
            )


class RNGStateCheckpoint(L.Callback):
    """Store the python, numpy and torch (and CUDA) RNG states in checkpoints; restore them when a fit resumes."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["rng_states"] = collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # validate/test of a checkpoint must not rewind the generators of the run that is testing it
        if trainer.state.fn == TrainerFn.FITTING and "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])


def collect_rng_states() -> dict:
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = states["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (numpy_state["kind"], keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])

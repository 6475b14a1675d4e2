"""Resumable runs: a checkpoint when a fit is interrupted, and the RNG state inside every checkpoint.

Lightning restores the model, optimizer, schedulers, loops and callback states from `ckpt_path`, but not the random
number generators, so without `RNGStateCheckpoint` a resumed run shuffles and drops out differently from an
uninterrupted one. RNG states are stored as tensors and plain tuples: checkpoints stay loadable with
`weights_only=True`.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    """Save `<dirpath>/<filename>.ckpt` when a fit is stopped by Ctrl-C or SIGTERM (a cluster's pre-emption).

    Lightning turns SIGTERM into `SIGTERMException` at the next batch boundary (on every rank); both reach
    `on_exception`. A first Ctrl-C during fit is handled the same way (the batch running finishes, the run exits
    with 130): Python's `KeyboardInterrupt` would land anywhere, e.g. between a step's backward and its optimizer
    step, and a checkpoint of such a state resumes with the step counter one ahead. A second Ctrl-C stops at once
    (a checkpoint is still saved, of wherever the step was). Other errors are bugs, not interruptions: no checkpoint.
    Resuming in the same run directory (`hydra.run.dir`) lets ModelCheckpoint carry on its best-so-far tracking;
    Lightning resets it when the checkpoint directory changes.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted", run_dir: str | None = None) -> None:
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")
        self.run_dir = run_dir
        self.ctrl_c, self.previous_handler = False, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self.ctrl_c, self.previous_handler = False, signal.getsignal(signal.SIGINT)

        def stop_after_this_batch(signum, frame) -> None:
            if self.ctrl_c:
                raise KeyboardInterrupt  # the second Ctrl-C
            self.ctrl_c = trainer._signal_connector.received_sigterm = True  # stops at the batch end, as SIGTERM does
            log.warning("Ctrl-C: stopping after this batch and saving a checkpoint (Ctrl-C again stops at once)")

        signal.signal(signal.SIGINT, stop_after_this_batch)

    def restore_sigint(self) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_sigint()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore_sigint()
        if trainer.state.fn != TrainerFn.FITTING or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        if self.ctrl_c and isinstance(exception, SIGTERMException):
            exception.code = 130  # a shell's exit status for Ctrl-C; a SIGTERMException exits 0 by itself
        trainer.save_checkpoint(self.ckpt_path)  # every rank calls it (a barrier); rank 0 writes
        if trainer.is_global_zero:
            stopped_by = "Ctrl-C" if self.ctrl_c else type(exception).__name__
            resume = f"ckpt_path={self.ckpt_path}" + (f" hydra.run.dir={self.run_dir}" if self.run_dir else "")
            log.warning(
                "%s (epoch %d, global step %d): checkpoint saved to %s\nResume with the same overrides plus: %s",
                stopped_by,
                trainer.current_epoch,
                trainer.global_step,
                self.ckpt_path,
                resume,
            )


class RNGStateCheckpoint(L.Callback):
    """Store the python, numpy and torch (and this rank's CUDA device) RNG states in checkpoints; restore them when a
    fit resumes.

    Under DDP every rank has streams of its own (its seed, its dropout, its device augmentation's draws): the
    checkpoint holds each rank's states (`rng_states_per_rank`, gathered when every rank saves) and each rank
    resumes its own. Only the current device's CUDA state is kept, so a checkpoint made with more GPUs than the
    resuming process sees still loads (issue 18). Resumed with another number of processes, rank 0 takes rank 0's
    states and the others keep their fresh seeding (said in the log): streams cannot be split or merged exactly.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = collect_rng_states()
        checkpoint["rng_states"] = states
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, states)  # every rank saves (a barrier); rank 0 writes
            checkpoint["rng_states"], checkpoint["rng_states_per_rank"] = per_rank[0], per_rank

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # validate/test of a checkpoint must not rewind the generators of the run that is testing it
        if trainer.state.fn != TrainerFn.FITTING or "rng_states" not in checkpoint:
            return
        per_rank = checkpoint.get("rng_states_per_rank") or [checkpoint["rng_states"]]
        if len(per_rank) == trainer.world_size:
            set_rng_states(per_rank[trainer.global_rank])
        elif trainer.global_rank == 0:
            set_rng_states(per_rank[0])
            log.warning(
                "checkpoint saved by %d process(es), resumed by %d: rank 0 resumes rank 0's random streams, the "
                "other ranks keep their own seeding",
                len(per_rank),
                trainer.world_size,
            )


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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state()  # this rank's device only
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
    cuda_state = states.get("torch.cuda")
    if cuda_state is not None and torch.cuda.is_available():
        if isinstance(cuda_state, list | tuple):  # checkpoints of before: every visible device's state
            device = torch.cuda.current_device()
            cuda_state = cuda_state[device] if device < len(cuda_state) else None
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state)

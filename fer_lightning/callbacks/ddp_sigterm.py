"""SIGTERM under DDP agreed every n training steps, not every step: Lightning 2.6's check costs a host sync per step.

Lightning 2.6 (`_TrainingEpochLoop._broadcast_sigterm_tensor`, upstream issue #21487, PR #20825) broadcasts rank 0's
SIGTERM flag at the start of every training step under DDP and reads it back with `.item()`: a collective and a
CPU-GPU synchronisation per step, so the CPU can never queue the next step while the GPU runs this one. Its signal
handler also issues a broadcast, from inside the handler, that only pairs with the other ranks' next per-step one.

`DDPSigtermEveryNSteps` replaces both, on this trainer only, while more than one process trains:
- the handler forwards the signal to the launcher's children, as Lightning's does, and only notes it (no
  collective in a signal handler, and no rank stopping alone at its batch end);
- every `every_n_steps`-th training step (the same steps on every rank: they step in lockstep) the ranks all-reduce
  their notes (max); if any rank got the signal, every rank marks it and raises `SIGTERMException` at that same
  step, which `InterruptCheckpoint` turns into `interrupted.ckpt` as before.
The stop then comes up to `every_n_steps - 1` steps later than Lightning's (or after the epoch's validation); a
cluster's grace period is 30-120 s. Where Lightning has no per-step broadcast (other versions), nothing is changed.
"""

from __future__ import annotations

import contextlib
import logging
from types import FrameType

import lightning as L
import torch
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

PATCHED = "_broadcast_sigterm_tensor"  # the loop's per-step broadcast (Lightning 2.6)
NOTIFIER = "_sigterm_notifier_fn"  # the signal connector's handler, registered after the setup hooks


def lightning_broadcasts_every_step() -> bool:
    """Whether the installed Lightning has the per-step broadcast and the handler this callback replaces."""
    return hasattr(_TrainingEpochLoop, PATCHED) and hasattr(_SignalConnector, NOTIFIER)


def any_rank_pending(pending: bool, device: torch.device) -> bool:
    """One all-reduce (max) of every rank's flag: True on every rank when any rank's flag is set."""
    flag = torch.tensor([int(pending)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


class DDPSigtermEveryNSteps(L.Callback):
    def __init__(self, every_n_steps: int = 20) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.pending = every_n_steps, False
        self._patched: tuple[object, object] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.world_size < 2 or not lightning_broadcasts_every_step():
            return
        loop, connector = trainer.fit_loop.epoch_loop, trainer._signal_connector
        self.pending, self._patched = False, (loop, connector)
        # instance attributes shadow the class's methods for this trainer alone; teardown removes them
        setattr(loop, PATCHED, lambda: self.check(trainer))
        setattr(connector, NOTIFIER, lambda signum, frame: self.notify(trainer, signum, frame))

    def notify(self, trainer: L.Trainer, signum: int, frame: FrameType | None) -> None:
        """The SIGTERM handler: pass the signal on to the launcher's children once, note it, nothing collective."""
        log.info("rank %d received SIGTERM (%s): the ranks stop together at a check step", trainer.global_rank, signum)
        launcher = trainer.strategy.launcher
        if not self.pending and launcher is not None:
            launcher.kill(signum)
        self.pending = True

    def check(self, trainer: L.Trainer) -> None:
        """Every n-th training step: stop all ranks at this step when any of them got SIGTERM."""
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready % self.every_n_steps:
            return
        if not any_rank_pending(self.pending, trainer.strategy.root_device):
            return
        trainer._signal_connector.received_sigterm = True
        with contextlib.suppress(Exception):
            torch.distributed.barrier()  # as Lightning: every rank leaves from here
        raise SIGTERMException()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._patched is not None:
            loop, connector = self._patched
            vars(loop).pop(PATCHED, None)
            vars(connector).pop(NOTIFIER, None)
            self._patched = None

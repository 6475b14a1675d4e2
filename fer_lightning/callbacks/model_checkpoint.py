"""Lightning's ModelCheckpoint with a `last.ckpt` that a resume can trust, and quiet under `fast_dev_run`.

Lightning 2.6 writes `last.ckpt` only "whenever a checkpoint file gets saved": with `monitor: val/acc` and one kept
top-k file, only at epochs that improve val/acc. A long run whose PublicTest plateaus then keeps a `last.ckpt` many
epochs old, and resuming it after `max_time`, a crash or the end of a session silently redoes those epochs (found
on a 3-hour run whose `last.ckpt` lagged 6 epochs behind). Here `last.ckpt` is also written at the end of every
epoch's validation. Not at the validation that follows a stop in the middle of an epoch (`max_time`, the training
budget): Lightning resumes a mid-epoch checkpoint of a plain DataLoader unreliably. (Lightning itself still writes
`last.ckpt` there when that validation improves val/acc, as it always did.)

Under `trainer.fast_dev_run` Lightning logs "Logging and checkpointing is suppressed" and its ModelCheckpoint skips
every save, except `on_train_end`'s `save_last` fallback, which writes `last.ckpt` anyway: a dev run left a
checkpoint behind that `resume=true` would later pick up as a real run's.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class FERModelCheckpoint(ModelCheckpoint):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_at_epoch_end(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_at_epoch_end(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)

    def _save_last_at_epoch_end(self, trainer: L.Trainer) -> None:
        """`last.ckpt` now, unless the parent just wrote it (same global step) or this is not an epoch's end."""
        epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        # _should_skip_saving_checkpoint: fast_dev_run, sanity check, not fitting, or this step already saved
        if self.save_last and epoch_end and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

"""Lightning's ModelCheckpoint, but quiet under `fast_dev_run` as Lightning itself says it is.

Lightning 2.6 logs "Logging and checkpointing is suppressed" for `trainer.fast_dev_run`, and its ModelCheckpoint
skips every save then, except `on_train_end`'s `save_last` fallback, which writes `last.ckpt` anyway: a dev run
left a checkpoint behind that `resume=true` would later pick up as a real run's.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class FERModelCheckpoint(ModelCheckpoint):
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)

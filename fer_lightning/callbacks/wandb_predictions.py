"""W&B test-time media: the test confusion matrix and a table of sample predictions with their images.

A no-op unless a `WandbLogger` is among the trainer's loggers, so it can sit in the default callbacks.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger


def wandb_logger_of(trainer: L.Trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


class WandbTestPredictions(L.Callback):
    """On test end, log `test/confusion_matrix` (a W&B chart) and `test/predictions` (a table of `num_samples`)."""

    def __init__(self, num_samples: int = 32) -> None:
        self.num_samples = num_samples
        self.rows: list[list] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: tuple[torch.Tensor, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        wanted = self.num_samples - len(self.rows)
        if wanted <= 0 or not trainer.is_global_zero or wandb_logger_of(trainer) is None:
            return
        import wandb

        images, targets = batch[0][:wanted], batch[1][:wanted]
        with torch.no_grad():  # one extra forward over a few images, on rank 0 only
            confidence, predicted = pl_module(images).softmax(-1).max(-1)
        shown = images[:, 0] if images.ndim == 5 else images  # the first view of a TTA batch
        names = pl_module.class_names
        for image, target, pred, conf in zip(shown.cpu(), targets.tolist(), predicted.tolist(), confidence.tolist()):
            pixels = image.permute(1, 2, 0).squeeze(-1).numpy()  # (H, W) grey or (H, W, C)
            self.rows.append([wandb.Image(pixels), names[target], names[pred], conf, target == pred])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        import wandb

        payload = {}
        if self.rows:
            columns = ["image", "true", "predicted", "confidence", "correct"]
            payload["test/predictions"] = wandb.Table(columns=columns, data=self.rows)
        confmat = getattr(pl_module, "test_report", {}).get("confmat")
        if confmat is not None:
            y_true, y_pred = confmat_to_labels(confmat.numpy())
            payload["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true, preds=y_pred, class_names=list(pl_module.class_names), title="test confusion matrix"
            )
        if payload:
            logger.experiment.log(payload)


def confmat_to_labels(confmat: np.ndarray) -> tuple[list[int], list[int]]:
    """(true, predicted) label pairs with the counts of a confusion matrix: what W&B's chart aggregates again."""
    rows, cols = np.nonzero(confmat)
    counts = confmat[rows, cols].astype(int)
    return np.repeat(rows, counts).tolist(), np.repeat(cols, counts).tolist()

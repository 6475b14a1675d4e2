"""The LightningModule that wraps any registered architecture for FER classification.

It receives the network, a partial optimizer and a partial scheduler from config (lightning-hydra-template
style). Batches arrive as uint8; normalisation happens here, on the model's device, with statistics stored
as buffers so every checkpoint carries its own preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from fer_lightning.data.mixup import MixupCutmix
from fer_lightning.losses import hard_targets, soft_cross_entropy


def eval_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "per_class_acc": MulticlassAccuracy(num_classes, average="none"),
            "confmat": MulticlassConfusionMatrix(num_classes),
        }
    )


class FERLitModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., dict] | None = None,
        num_classes: int = 7,
        class_names: Sequence[str] | None = None,
        in_chans: int = 1,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        model_config: dict | None = None,
        compile: bool = False,
        distill=None,
    ) -> None:
        super().__init__()
        # Only plain values go into hparams, so checkpoints load with `weights_only=True`: `net` is rebuilt from
        # `model_config`, and the optimizer/scheduler factories come from the run's config.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "distill"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = net
        # fer_lightning.distill.Distillation: frozen teachers kept out of this module's tree (and its checkpoint)
        self.distill = distill
        if distill is not None:
            self.hparams["distill"] = distill.hparams()
        if compile:
            self.net.compile()  # in place: state_dict keys stay the same, so checkpoints stay portable
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.register_buffer("input_mean", torch.full((1, in_chans, 1, 1), 0.5))
        self.register_buffer("input_std", torch.full((1, in_chans, 1, 1), 0.5))
        # Batch-level Mixup/CutMix (off at alpha 0), and class weights for data.balance=weighted_loss, taken from the
        # datamodule in `setup` (not persistent: a resumed run takes them from its data again)
        self.batch_mix = MixupCutmix(num_classes, mixup_alpha, cutmix_alpha) if mixup_alpha or cutmix_alpha else None
        self.register_buffer("class_weights", None, persistent=False)
        # validate_args=False: torchmetrics' target check (torch.unique) waits for the GPU every training step; labels
        # are checked when the data is read, and a bad index still fails in the loss
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_metrics = eval_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = eval_metrics(num_classes).clone(prefix="test/")
        # eval losses as image-weighted means that DDP syncs as sums: under DDP the eval shards differ by up to one
        # image, where a mean of the ranks' means (self.log's sync_dist) would not be the split's mean; no NaN
        # check, which would wait for the GPU every batch
        self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(2))
        self.val_acc_best = MaxMetric()
        self.test_report: dict = {}
        # what a resume needs beside the weights: torchmetrics states are not in the state_dict, and a mid-epoch
        # resume skips on_train_epoch_start (where the epoch's learning rate is logged)
        self.epoch_start_lr: float | None = None
        self.resumed_state: dict = {}

    # ----- preprocessing ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take normalisation statistics (and the rest of the preprocessing) from the datamodule when fitting."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "preprocessing"):
            info = datamodule.preprocessing
            self.input_mean.fill_(info["mean"])
            self.input_std.fill_(info["std"])
            self.hparams["preprocessing"] = info
            if self.distill is not None:
                self.distill.check_compatible(self.class_names, info)
            if getattr(datamodule, "class_weights", None) is not None:
                self.class_weights = datamodule.class_weights.to(self.input_mean.device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float normalised; a float input is taken as already scaled to [0, 1]."""
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        return (images - self.input_mean) / self.input_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits; a (N, V, C, H, W) batch of TTA views is averaged over V."""
        if images.ndim == 5:
            batch, views = images.shape[:2]
            logits = self.net(self.normalize(images.flatten(0, 1))).float()
            return logits.view(batch, views, -1).mean(1)
        # fp32 logits under bf16 autocast: the loss, softmax, TTA mean and metrics then see no bf16 rounding
        return self.net(self.normalize(images)).float()

    def on_train_epoch_start(self) -> None:
        self.epoch_start_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", self.epoch_start_lr, on_step=False, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.val_acc_best.update_count:  # this rank's state: the same on every rank (val/acc is synced)
            checkpoint["val_acc_best"] = float(self.val_acc_best.max_value)
        if self.epoch_start_lr is not None:
            checkpoint["epoch_start_lr"] = self.epoch_start_lr

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_state = {k: checkpoint[k] for k in ("val_acc_best", "epoch_start_lr") if k in checkpoint}

    # ----- steps -------------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        inputs = self.normalize(images)
        if self.batch_mix is not None:
            inputs, targets = self.batch_mix(inputs, targets)  # targets become probabilities
        logits = self.net(inputs).float()  # the loss in fp32 under bf16 autocast
        loss = soft_cross_entropy(logits, targets, self.class_weights, self.hparams.label_smoothing)
        if self.distill is not None:  # the teachers see this very input: the same view, mixture and crop
            self.distill.place(inputs.device, self.net)
            loss = self.distill.loss(loss, logits, self.distill.targets(inputs, self.input_mean, self.input_std))
        if hasattr(self.net, "regularization_loss"):
            loss = loss + self.net.regularization_loss()
        self.train_acc(logits, hard_targets(targets))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str) -> None:
        images, targets = batch
        logits = self(images)
        loss = soft_cross_entropy(logits, targets)  # FER+ probability labels are soft at eval too
        metrics.update(logits, hard_targets(targets))
        mean_loss = getattr(self, f"{stage}_loss")
        # the batch's mean once per image: with nan_strategy="disable" torchmetrics 1.9 drops `weight=`
        mean_loss.update(loss.expand(len(targets)))
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def _log_scalars(self, metrics: MetricCollection) -> dict[str, torch.Tensor]:
        values = metrics.compute()
        metrics.reset()
        self.log_dict({k: v for k, v in values.items() if v.ndim == 0}, prog_bar=True, sync_dist=True)
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._log_scalars(self.val_metrics)
        self.val_acc_best(values["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        values = self._log_scalars(self.test_metrics)
        self.test_report = {k.removeprefix("test/"): v.cpu() for k, v in values.items()}

    def on_train_start(self) -> None:
        # after the sanity check (on_fit_start runs before it), whose partial validation must not count as the best
        self.val_acc_best.reset()
        resumed, self.resumed_state = self.resumed_state, {}
        if "val_acc_best" in resumed:  # a resumed fit goes on with the best of the epochs before it
            self.val_acc_best.update(torch.tensor(resumed["val_acc_best"], device=self.device))
        if self.trainer.fit_loop.restarted_mid_epoch and "epoch_start_lr" in resumed:
            self.epoch_start_lr = resumed["epoch_start_lr"]
            self.log("train/lr", self.epoch_start_lr, on_step=False, on_epoch=True)

    # ----- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        # `scheduler` is fer_lightning.schedulers.build_lr_scheduler, partially applied by Hydra; the trainer gives
        # step-wise schedules (warmup_cosine) their length
        scheduler = self.scheduler_factory(optimizer=optimizer, trainer=self._trainer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

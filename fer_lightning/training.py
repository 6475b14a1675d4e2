"""The train -> validate (best checkpoint) -> test -> report pipeline behind `train.py`."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from fer_lightning.callbacks.training_clock import TrainingClock
from fer_lightning.checkpoint import check_resume_checkpoint
from fer_lightning.config import instantiate_list, model_config
from fer_lightning.errors import UserError
from fer_lightning.loggers import finish_loggers, log_run_config
from fer_lightning.models.table import count_macs
from fer_lightning.speed import SPEED_RECORD, SpeedSetting, apply_speed_setting, settle_speed_settings
from fer_lightning.sweep.jobs import multirun_ddp_job
from fer_lightning.utils.html_report import write_html_report_safely
from fer_lightning.utils.report import per_class_accuracy, write_metrics_json, write_run_config, write_split_report
from fer_lightning.utils.rich_config import print_config_tree

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig, net: torch.nn.Module | None = None) -> L.LightningModule:
    """The LitModule around the configured network; its model config goes into every checkpoint."""
    net = hydra.utils.instantiate(cfg.model) if net is None else net
    return hydra.utils.instantiate(cfg.module, net=net, model_config=model_config(cfg))


def build_run(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Data, module and trainer; the speed settings left at `auto` are settled first (timed when `speed.autotune`),
    since the Trainer's precision and the channels_last callback are fixed when they are built."""
    check_sync_batchnorm(cfg.trainer)
    datamodule = hydra.utils.instantiate(cfg.data)
    net = hydra.utils.instantiate(cfg.model)
    settle_run_speed(cfg, net)
    module = build_module(cfg, net)
    module.hparams["trained_precision"] = cfg.trainer.precision  # eval's `auto` evaluates in it (speed.eval_precision)
    callbacks, loggers = instantiate_list(cfg.get("callbacks")), instantiate_list(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def check_sync_batchnorm(trainer_cfg: DictConfig) -> None:
    """torch's SyncBatchNorm runs only on CUDA; on the CPU DDP would die in its first forward, after the data load."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if trainer_cfg.get("sync_batchnorm") and on_cpu:
        raise UserError(
            "trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernels): use "
            "trainer=ddp_cpu for DDP on the CPU, or set trainer.sync_batchnorm=false"
        )


def settle_run_speed(cfg: DictConfig, net: torch.nn.Module) -> None:
    """Concrete precision / channels_last for this run, and `speed.json` in the run directory saying what was chosen
    and measured. A resumed run (`ckpt_path`) takes the choice its run directory recorded, without timing again, so
    that it goes on in the precision and layout it started in."""
    record = Path(cfg.paths.output_dir) / SPEED_RECORD
    if cfg.get("ckpt_path") and record.exists():
        choice = json.loads(record.read_text())["choice"]
        apply_speed_setting(cfg, SpeedSetting(choice["precision"], choice["channels_last"], choice["compile"]))
        return
    result = settle_speed_settings(cfg, net)
    if result is not None and rank_zero_only.rank == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(result.as_dict(), indent=2) + "\n")


def scalar_metrics(results: list[dict]) -> dict[str, float]:
    return {k: float(v) for result in results for k, v in result.items()}


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Fit, select the best checkpoint on val (PublicTest), test it (PrivateTest), write the reports.

    Under DDP every rank runs this and returns the same metrics (synced across ranks); only rank 0 writes files.
    """
    started = time.time()
    rank_zero = rank_zero_only.rank == 0
    if rank_zero:
        print_config_tree(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero:
        write_run_config(output_dir, cfg)
    with multirun_ddp_job(cfg.get("ckpt_path")):  # the checkpoint every rank resumes from
        datamodule, module, trainer = build_run(cfg)
        log_run_config(trainer, cfg)
        try:
            metrics, best = fit_validate_test(trainer, module, datamodule, cfg.get("ckpt_path"))
            test_report = module.test_report  # the single-view one; the extra views' passes below replace it
            metrics |= test_other_views(trainer, module, datamodule, cfg.get("report_tta") or {}, best)
        finally:
            finish_loggers(trainer)  # also after an error: the next job of a sweep must not reuse this W&B run
    # a resumed run's wall time includes its earlier attempts up to the checkpoint it resumed from
    clock = next((c for c in trainer.callbacks if isinstance(c, TrainingClock)), None)
    earlier_s = clock.resumed_wall_s if clock is not None else 0.0
    metrics |= {"epochs": trainer.current_epoch, "wall_time_s": time.time() - started + earlier_s}
    metrics |= model_costs(module.net, datamodule)
    if trainer.is_global_zero:
        module.test_report = test_report
        report_test(module, datamodule, output_dir, metrics, best)
        write_html_report_safely(output_dir)  # report.html; a failure is a warning, never the run's
    return metrics


def fit_validate_test(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> tuple[dict[str, float], str | None]:
    """`ckpt_path` resumes a fit (optimizer, schedulers, loops, callbacks and RNG states included)."""
    if ckpt_path:
        check_resume_checkpoint(ckpt_path, module)  # a one-line error naming the file, not Lightning's traceback
        log.info("fit resumes from %s", ckpt_path)  # on every rank (Lightning says so on rank 0 only)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    rate = training_rate(trainer)  # now: validate/test with ckpt_path rewind the callbacks' state to that checkpoint
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    log.info("best checkpoint (by val/acc): %s", best)
    metrics = scalar_metrics(trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False))
    metrics |= scalar_metrics(trainer.test(module, datamodule=datamodule, ckpt_path=best))
    return metrics | rate, best


def test_other_views(trainer: L.Trainer, module, datamodule, views: DictConfig | dict, best: str | None) -> dict:
    """PrivateTest of the selected checkpoint again under each of `report_tta`'s views (e.g. flip), as
    `test_<name>/acc` etc.: a leaderboard row's TTA columns without a separate eval.py run. Selection stays on
    single-view PublicTest; the datamodule's own views are put back afterwards."""
    metrics, own_views = {}, datamodule.tta
    try:
        for name, view_cfg in views.items():
            datamodule.tta = hydra.utils.instantiate(view_cfg)
            results = scalar_metrics(trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False))
            metrics |= {key.replace("test/", f"test_{name}/", 1): value for key, value in results.items()}
    finally:
        datamodule.tta = own_views
    return metrics


def model_costs(net: torch.nn.Module, datamodule) -> dict[str, float]:
    """Parameters and multiply-adds of one forward at the input size the model was trained at."""
    size = datamodule.crop_size or datamodule.image_size
    net = copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)
    return {
        "params": float(sum(p.numel() for p in net.parameters())),
        "macs": float(count_macs(net, size, datamodule.in_chans)),
    }


def training_rate(trainer: L.Trainer) -> dict[str, float]:
    """Training images per second of training time (TrainingClock's clock: epochs' own time, evaluation not)."""
    clock = next((c for c in trainer.callbacks if isinstance(c, TrainingClock)), None)
    if clock is None or clock.seconds <= 0:
        return {}
    return {"train_images_per_s": clock.images / clock.seconds, "train_s": clock.seconds}


def report_test(module, datamodule, output_dir: Path, metrics: dict, best: str | None) -> None:
    report = module.test_report
    if "confmat" in report:
        write_split_report(output_dir, "test", report["confmat"].numpy(), datamodule.class_names)
        metrics["test/per_class_acc"] = per_class_accuracy(datamodule.class_names, report["per_class_acc"])
    metrics["best_checkpoint"] = best
    write_metrics_json(output_dir / "metrics.json", metrics)
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val/acc", "test/acc", "test/f1_macro") if k in metrics)
    log.info("final (checkpoint selected on val = PublicTest, test = PrivateTest): %s", summary)
    print(f"\nFinal metrics: {summary}\nRun directory: {output_dir}")

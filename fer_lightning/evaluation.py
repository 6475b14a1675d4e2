"""Evaluate a checkpoint, or an ensemble of them (ensemble.py), on configured data (`eval.py`): the same metrics.json
and reports as training."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from fer_lightning.checkpoint import apply_checkpoint_preprocessing, load_module, match_data_classes
from fer_lightning.ensemble import run_ensemble_eval
from fer_lightning.errors import UserError
from fer_lightning.speed import eval_precision
from fer_lightning.utils.report import per_class_accuracy, write_metrics_json, write_run_config, write_split_report
from fer_lightning.utils.rich_config import print_config_tree

log = logging.getLogger(__name__)


def run_eval(cfg: DictConfig) -> dict:
    """One checkpoint (`ckpt_path=a.ckpt`), or an ensemble of several (`ckpt_path=[a.ckpt,b.ckpt]`, a Hydra list)."""
    if not cfg.get("ckpt_path"):
        raise UserError(
            "eval needs a checkpoint: python eval.py ckpt_path=/path/to/model.ckpt "
            "(or ckpt_path=[a.ckpt,b.ckpt] for an ensemble)"
        )
    if OmegaConf.is_list(cfg.ckpt_path):
        return run_ensemble_eval(cfg)
    return run_single_eval(cfg)


def run_single_eval(cfg: DictConfig) -> dict:
    module = load_module(cfg.ckpt_path)
    apply_checkpoint_preprocessing(cfg, module.hparams.get("preprocessing", {}))
    print_config_tree(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    match_data_classes(cfg.ckpt_path, module, datamodule, cfg.data.path)  # by name: may relabel the data
    precision = eval_precision(cfg.trainer.precision, [module.hparams.get("trained_precision")])
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], precision=precision)
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict = {"checkpoint": str(cfg.ckpt_path), "tta": OmegaConf.select(cfg, "tta._target_")}
    for split in ("val", "test") if cfg.split == "both" else (cfg.split,):
        datamodule.test_split = split
        (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics |= {key.replace("test/", f"{split}/"): value for key, value in results.items()}
        # under DDP the confusion matrix is synced across ranks (torchmetrics): rank 0 writes the reports
        if trainer.is_global_zero:
            report, names = module.test_report, datamodule.class_names
            write_split_report(output_dir, split, report["confmat"].numpy(), names)
            metrics[f"{split}/per_class_acc"] = per_class_accuracy(names, report["per_class_acc"])
    if trainer.is_global_zero:
        write_run_config(output_dir, cfg)
        write_metrics_json(output_dir / "metrics.json", metrics)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith(("/acc", "/f1_macro")))
        print(f"\nEval metrics: {summary}\nRun directory: {output_dir}")
    return metrics

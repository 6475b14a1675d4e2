"""Evaluate a checkpoint, or an ensemble of them (ensemble.py), on configured data (`eval.py`): the same metrics.json
and reports as training, plus the expected calibration error and a reliability diagram per split (calibration.py).

`calibrate=true` fits a temperature on the val split's logits and writes `<name>.calibrated.ckpt` storing it."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from fer_lightning.calibration import (
    LogitCollector,
    checkpoint_temperature,
    fit_temperature,
    split_calibration,
    write_calibrated_checkpoint,
)
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
    calibrate = cfg.get("calibrate", False)
    if not isinstance(calibrate, bool):
        raise UserError(f"calibrate={calibrate!r}: expected true or false")
    if OmegaConf.is_list(cfg.ckpt_path):
        if calibrate:
            raise UserError(
                "calibrate=true fits the temperature of one checkpoint: calibrate each member on its own "
                "(python eval.py ckpt_path=a.ckpt calibrate=true), not an ensemble (ckpt_path=[...])"
            )
        return run_ensemble_eval(cfg)
    if cfg.get("ensemble_select", "all") != "all":
        raise UserError(
            f"ensemble_select={cfg.ensemble_select} chooses among an ensemble's members: give a list, "
            "ckpt_path=[a.ckpt,b.ckpt,...], not one checkpoint"
        )
    return run_single_eval(cfg)


def eval_splits(split: str, calibrate: bool) -> tuple[str, ...]:
    """The splits evaluated, in order; calibrating needs val (the split T is fitted on) whatever `split` says."""
    splits = ("val", "test") if split == "both" else (split,)
    if calibrate and "val" not in splits:
        log.info("calibrate=true: the val split is evaluated too, to fit the temperature on")
        splits = ("val", *splits)
    return splits


def run_single_eval(cfg: DictConfig) -> dict:
    module = load_module(cfg.ckpt_path)
    temperature = checkpoint_temperature(module.hparams.get("preprocessing"), cfg.ckpt_path)
    apply_checkpoint_preprocessing(cfg, module.hparams.get("preprocessing", {}))
    print_config_tree(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    match_data_classes(cfg.ckpt_path, module, datamodule, cfg.data.path)  # by name: may relabel the data
    precision = eval_precision(cfg.trainer.precision, [module.hparams.get("trained_precision")])
    collector = LogitCollector()
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[collector], precision=precision)
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict = {"checkpoint": str(cfg.ckpt_path), "tta": OmegaConf.select(cfg, "tta._target_")}
    logits = {}
    for split in eval_splits(cfg.split, cfg.get("calibrate", False)):
        datamodule.test_split = split
        (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics |= {key.replace("test/", f"{split}/"): value for key, value in results.items()}
        logits[split] = collector.collected(trainer)
        # under DDP the confusion matrix is synced across ranks (torchmetrics): rank 0 writes the reports
        if trainer.is_global_zero:
            report, names = module.test_report, datamodule.class_names
            write_split_report(output_dir, split, report["confmat"].numpy(), names)
            metrics[f"{split}/per_class_acc"] = per_class_accuracy(names, report["per_class_acc"])
    if trainer.is_global_zero:
        metrics |= calibration_metrics(cfg, logits, temperature, output_dir)
        write_run_config(output_dir, cfg)
        write_metrics_json(output_dir / "metrics.json", metrics)
        keys = ("/acc", "/f1_macro", "/ece", "/ece_calibrated")
        summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith(keys))
        print(f"\nEval metrics: {summary}\nRun directory: {output_dir}")
    return metrics


def calibration_metrics(cfg: DictConfig, logits: dict, temperature: float, output_dir: Path) -> dict:
    """ECE and NLL per split (of softmax(logits / the checkpoint's temperature), 1 when it stores none) with their
    reliability diagrams; with calibrate=true a temperature fitted on val, `*_calibrated` values and the calibrated
    checkpoint. The logits are those of the test loop: TTA views averaged as logits, then divided by T."""
    metrics: dict = {"temperature": temperature}
    fitted = fit_temperature(*logits["val"]) if cfg.get("calibrate", False) else None
    for split, (split_logits, targets) in logits.items():
        metrics |= split_calibration(split, split_logits, targets, temperature, fitted, output_dir)
    if fitted is None:
        return metrics
    info = {"temperature": fitted, "split": "val", "images": len(logits["val"][1]), "data": str(cfg.data.path)}
    info |= {key: metrics[f"val/{key}"] for key in ("nll", "nll_calibrated", "ece", "ece_calibrated")}
    path = write_calibrated_checkpoint(cfg.ckpt_path, fitted, info, cfg.get("calibrated_ckpt_path"))
    metrics |= {"calibrated_temperature": fitted, "calibrated_checkpoint": str(path)}
    changes = [f"{s}/ece {metrics[f'{s}/ece']:.4f} -> {metrics[f'{s}/ece_calibrated']:.4f}" for s in logits]
    print(f"\nCalibration: T = {fitted:.4f} fitted on val ({info['images']} images); {', '.join(changes)}")
    print(f"Calibrated checkpoint (T stored in its preprocessing): {path}")
    return metrics

"""Hydra entry points, shared by the root scripts (`python train.py`) and the console scripts (`fer-train`)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

# conf/ sits beside the package in the repository (install with `pip install -e .`).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    from fer_lightning.training import run_training

    metrics = run_training(cfg)
    # Returned so Hydra sweepers (Optuna) can optimise it.
    return metrics.get(cfg.get("optimized_metric", "val/acc"))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    from fer_lightning.evaluation import run_eval

    run_eval(cfg)

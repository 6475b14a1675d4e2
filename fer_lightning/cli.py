"""Hydra entry points, shared by the root scripts (`python train.py`) and the console scripts (`fer-train`).

A user error (fer_lightning.errors) ends the command with one message and exit status 2, no traceback."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fer_lightning.config import CONFIG_DIR
from fer_lightning.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    from fer_lightning.sweep.jobs import run_job
    from fer_lightning.training import run_training

    with exit_on_user_error():
        metrics = run_job(run_training, cfg)  # in a multirun a failed job is recorded and the sweep goes on
    # Returned so Hydra sweepers (Optuna) can optimise it; None makes Optuna record a failed trial and go on.
    return None if metrics is None else metrics.get(cfg.get("optimized_metric", "val/acc"))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    from fer_lightning.evaluation import run_eval
    from fer_lightning.sweep.jobs import run_job

    with exit_on_user_error():
        run_job(run_eval, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def predict_main(cfg: DictConfig) -> None:
    from fer_lightning.predict import run_predict

    with exit_on_user_error():
        run_predict(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def export_main(cfg: DictConfig) -> None:
    from fer_lightning.export import run_export

    with exit_on_user_error():
        run_export(cfg)

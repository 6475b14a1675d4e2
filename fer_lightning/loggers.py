"""Experiment loggers: W&B that never blocks a run, a CSV log that survives a resume, and the resolved run config
sent to every logger.

W&B goes offline by itself when no API key is configured (neither `WANDB_API_KEY` nor a netrc entry for its host),
writes everything under the run directory, and prints the `wandb sync` command that uploads it later.
"""

from __future__ import annotations

import csv
import netrc
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str | None = None) -> str:
    """The configured mode, else `WANDB_MODE`, else online with an API key and offline without one."""
    return mode or os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")


def hydra_job_names() -> tuple[str | None, str | None]:
    """(group, name) defaults: in a multirun every job joins the sweep's group and is named by its overrides."""
    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, Path(hydra_cfg.runtime.output_dir).name
    overrides = hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
    return Path(hydra_cfg.sweep.dir).name, f"{hydra_cfg.job.num}:{overrides}"[:128]


def wandb_logger(
    save_dir: str,
    project: str,
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    log_model: bool | str = True,
    mode: str | None = None,
) -> WandbLogger:
    """Lightning's WandbLogger with the offline fallback, and group/name taken from Hydra when not given."""
    default_group, default_name = hydra_job_names()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # `mode` goes straight to wandb.init; Lightning's own `offline=True` refuses log_model, but offline W&B runs
    # do keep artifacts and upload them on `wandb sync`.
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group or default_group,
        name=name or default_name,
        tags=list(tags),
        job_type=job_type,
        log_model=log_model,
        mode=wandb_mode(mode),
    )


def log_run_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The whole resolved config, beside the module's hyperparameters that Lightning logs by itself."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)


def finish_loggers(trainer: L.Trainer) -> None:
    """Close W&B runs (so the next run in this process starts its own) and say how to upload offline ones."""
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None or not trainer.is_global_zero:
            continue  # never started (or not rank 0): nothing to close
        run = logger.experiment
        offline = run.settings.mode in ("offline", "dryrun")
        run_dir = Path(run.dir).parent
        run.finish()
        if offline:
            print(f"W&B ran offline (no API key configured). Upload this run with:\n  wandb sync {run_dir}")


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps its history.

    Lightning deletes an existing `metrics.csv` when its writer starts, so `ckpt_path=<run>/checkpoints/last.ckpt`
    into the same run directory (what the interrupt hint and sweeps' `resume=true` do) would throw away every epoch
    before the checkpoint. With `resume_step` set (the checkpoint's global step N) the rows the checkpoint covers
    stay and the resumed run appends after them; rows logged from step N on (work the resume redoes, a final
    validate/test) move to `metrics.replaced_from_step<N>.csv` beside it.
    """

    resume_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None or self.resume_step is None:
            return super().experiment
        metrics_file = Path(self.log_dir) / "metrics.csv"
        header, rows = read_csv_rows(metrics_file)
        with warnings.catch_warnings():  # its "previous log files will be deleted" is not true here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment  # Lightning's writer deletes metrics.csv here
        if header:
            # Lightning logs a step's (and an epoch end's) metrics at global step - 1: the checkpoint covers < N
            kept = [row for row in rows if int(float(row["step"])) < self.resume_step]
            replaced = [row for row in rows if int(float(row["step"])) >= self.resume_step]
            write_csv_rows(metrics_file, header, kept)
            if replaced:
                write_csv_rows(
                    metrics_file.with_name(f"metrics.replaced_from_step{self.resume_step}.csv"), header, replaced
                )
            writer.metrics_keys = list(header)  # appended rows follow the file's column order
        return writer


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def write_csv_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def keep_logged_history(trainer: L.Trainer, ckpt_path: str | None) -> None:
    """Before a resumed fit: tell CSV loggers the checkpoint's global step (rank 0 alone writes them)."""
    loggers = [logger for logger in trainer.loggers if isinstance(logger, ResumableCSVLogger)]
    if not ckpt_path or not loggers or not trainer.is_global_zero or not Path(ckpt_path).is_file():
        return  # "last"/"best" and missing files are Lightning's to resolve or refuse
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    for logger in loggers:
        logger.resume_step = int(checkpoint.get("global_step", 0))

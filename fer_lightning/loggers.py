"""Experiment loggers: W&B that never blocks a run, a CSV log that survives a resume, and the resolved run config
sent to every logger.

W&B goes offline by itself when no API key is configured (neither `WANDB_API_KEY` nor a netrc entry for its host),
writes everything under the run directory, and prints the `wandb sync` command that uploads it later.
"""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from fer_lightning.checkpoint import checkpoint_global_step


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


# the W&B run id, in the run directory: a run resumed from one of its checkpoints continues that W&B run
WANDB_RUN_ID_FILE = "wandb_run_id"


def wandb_run_id(resume_from: str | None) -> tuple[str, str | None]:
    """(run id, wandb's `resume`): the id the checkpoint's run recorded when resuming, else a new one.

    Checkpoints live in `<run dir>/checkpoints/`, so the id is looked up two levels above the checkpoint: this
    works whether the resumed run writes into the same run directory or into a new one.
    """
    if resume_from and Path(resume_from).is_file():
        recorded = Path(resume_from).resolve().parent.parent / WANDB_RUN_ID_FILE
        if recorded.is_file() and (run_id := recorded.read_text().strip()):
            return run_id, "allow"
    return secrets.token_hex(4), None


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
    resume_from: str | None = None,
) -> WandbLogger:
    """Lightning's WandbLogger with the offline fallback, and group/name taken from Hydra when not given.

    `resume_from` (the run's `ckpt_path`): a run resumed from a checkpoint logs into the W&B run that wrote it,
    so one run's curves stay one run in W&B (offline runs with the same id merge on `wandb sync`).
    """
    default_group, default_name = hydra_job_names()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run_id, resume = wandb_run_id(resume_from)
    if rank_zero_only.rank == 0:  # only rank 0 starts a W&B run; other ranks' ids are never used
        (Path(save_dir) / WANDB_RUN_ID_FILE).write_text(run_id + "\n")
    if "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
        # set but empty (common in CI files and shells): wandb's settings refuse "", so it counts as unset
        del os.environ["WANDB_MODE"]
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
        id=run_id,
        resume=resume,
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
    before the checkpoint. Given the checkpoint the run resumes from (`resume_from`, the run's `ckpt_path`), the rows
    it covers stay and the resumed run appends after them; rows logged from its global step N on (work the resume
    redoes, a final validate/test) move to `metrics.replaced_from_step<N>.csv` beside it.
    """

    def __init__(self, *args, resume_from: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.resume_from = resume_from

    @property
    @rank_zero_experiment
    def experiment(self):
        # "last"/"best" and missing files are Lightning's to resolve or refuse; there is no history to keep then
        if self._experiment is not None or not self.resume_from or not Path(self.resume_from).is_file():
            return super().experiment
        resume_step = checkpoint_global_step(self.resume_from)
        metrics_file = Path(self.log_dir) / "metrics.csv"
        header, rows = read_csv_rows(metrics_file)
        with warnings.catch_warnings():  # its "previous log files will be deleted" is not true here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment  # Lightning's writer deletes metrics.csv here
        if header:
            # Lightning logs a step's (and an epoch end's) metrics at global step - 1: the checkpoint covers < N
            kept = [row for row in rows if int(row["step"]) < resume_step]
            replaced = [row for row in rows if int(row["step"]) >= resume_step]
            write_csv_rows(metrics_file, header, kept)
            if replaced:
                write_csv_rows(metrics_file.with_name(f"metrics.replaced_from_step{resume_step}.csv"), header, replaced)
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

"""Hydra entry points, shared by the root scripts (`python train.py`) and the console scripts (`fer-train`).

Each checks the config's values first (fer_lightning/config_schema.py), before any data is read or file written.
A user error (fer_lightning.errors) ends the command with one message and exit status 2, no traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
import yaml
from omegaconf import DictConfig

from fer_lightning.config import CONFIG_DIR
from fer_lightning.config_schema import check_config
from fer_lightning.errors import exit_on_user_error

T = TypeVar("T")
# the Trainer arguments conf/trainer/default.yaml lists: `+trainer.<key>=` (how older commands set them) would make
# Hydra refuse with "Could not append to config. An item is already at 'trainer.<key>'"
TRAINER_CONFIG = Path(CONFIG_DIR) / "trainer" / "default.yaml"


def listed_trainer_plus(argv: list[str]) -> list[str]:
    """`argv` with `+trainer.<key>=v` read as `trainer.<key>=v` for every key the trainer node lists (others,
    and `++`, are left to Hydra), so commands written before the keys were listed keep working."""
    listed = set(yaml.safe_load(TRAINER_CONFIG.read_text()))
    fixed = []
    for arg in argv:
        key = arg[1:].partition("=")[0]
        if arg.startswith("+trainer.") and "=" in arg and key.removeprefix("trainer.") in listed:
            print(f"note: {key} is listed in conf/trainer/default.yaml: read {arg} as {arg[1:]}", file=sys.stderr)
            arg = arg[1:]
        fixed.append(arg)
    return fixed


def entry_point(hydra_main: Callable[[], object]) -> Callable[[], None]:
    """A console script: argv's listed `+trainer.` keys made plain, then the Hydra command."""

    def run() -> None:
        sys.argv[1:] = listed_trainer_plus(sys.argv[1:])
        widen_captured_output()
        hydra_main()

    return run


# Rich (config tree, progress bar, model summary) falls back to 80 columns when its output is no terminal: a log
# file or CI would get config paths cut and progress metrics wrapped. COLUMNS set by the user still wins.
CAPTURED_OUTPUT_COLUMNS = "200"


def widen_captured_output() -> None:
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):  # set but empty counts as unset
        os.environ["COLUMNS"] = CAPTURED_OUTPUT_COLUMNS


def log_lightning_once() -> None:
    """Lightning's log lines once on the console, and in Hydra's log file.

    `import lightning` gives the `lightning` logger a console handler of its own, whatever is configured, while
    its records also propagate to the root logger, where Hydra's job logging has put a console and a file handler:
    every line was printed twice. With Hydra's handlers in place, Lightning's own ones go and the records propagate
    (`lightning.pytorch` / `lightning.fabric` add theirs, unpropagated, only when imported before Hydra configured
    logging). Without root handlers (`hydra/job_logging=disabled`) Lightning keeps its own."""
    import lightning  # noqa: F401 (adds its handler; importing it here leaves none to be added later)

    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


def checked(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """`task` that first checks the config's values (a ConfigValueError) and that its data exists, before it reads
    or writes anything. Inside `run_job`, so that in a multirun a job with a bad value is recorded as failed and the
    sweep goes on."""
    return lambda cfg: task(check_data_present(check_config(cfg)))


def check_data_present(cfg: DictConfig) -> DictConfig:
    """A missing data file is the commonest first error: name it before the config tree, the speed autotune and the
    model are built (seconds to minutes on a CPU). A single run's directory, which Hydra made and nothing but its
    own files are in yet, is removed again; a multirun keeps the job's directory, where the failure is recorded."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fer_lightning.data.formats import check_data_files

    data = cfg.get("data")
    if data is None or data.get("synthetic") is not None or data.get("format") is None:
        return cfg  # the synthetic stand-in is generated at setup; eval/predict configs name no data of their own
    votes = data.get("votes_path")
    try:
        check_data_files(data.format, Path(data.path), Path(votes) if votes else None)
    except FileNotFoundError:
        hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
        if hydra_cfg is not None and hydra_cfg.mode == RunMode.RUN:
            remove_untouched_run_dir(Path(hydra_cfg.runtime.output_dir))
        raise
    return cfg


def remove_untouched_run_dir(run_dir: Path) -> None:
    """Remove `run_dir` when it holds only what Hydra writes at start (.hydra/, the job's log file)."""
    import shutil

    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if all(entry.name == ".hydra" or entry.suffix == ".log" for entry in entries):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from fer_lightning.sweep.jobs import run_job
    from fer_lightning.training import run_training

    log_lightning_once()
    with exit_on_user_error():
        metrics = run_job(checked(run_training), cfg)  # in a multirun a failed job is recorded and the sweep goes on
    # Returned so Hydra sweepers (Optuna) can optimise it; None makes Optuna record a failed trial and go on.
    return None if metrics is None else metrics.get(cfg.get("optimized_metric", "val/acc"))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from fer_lightning.evaluation import run_eval
    from fer_lightning.sweep.jobs import run_job

    log_lightning_once()
    with exit_on_user_error():
        run_job(checked(run_eval), cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def _predict(cfg: DictConfig) -> None:
    from fer_lightning.predict import run_predict

    log_lightning_once()
    with exit_on_user_error():
        checked(run_predict)(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def _export(cfg: DictConfig) -> None:
    from fer_lightning.export import run_export

    log_lightning_once()
    with exit_on_user_error():
        checked(run_export)(cfg)


train_main, eval_main = entry_point(_train), entry_point(_eval)
predict_main, export_main = entry_point(_predict), entry_point(_export)

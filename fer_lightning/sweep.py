"""Sweeps: a failed job becomes a row instead of stopping the sweep, an interrupted sweep resumes, and every sweep
ends with a summary table (fer_lightning/sweep_summary.py).

Each job's directory gets `job.json` (overrides, status, and how a resumed sweep treated it), written by
`SweepSummary` in the process that runs the job, so any launcher works (basic, joblib, submitit), beside the run's
`metrics.json`, or `error.txt` when it failed. `on_multirun_end` collects them into `summary.csv` and `summary.md`.

Re-running a sweep into its own directory with `resume=true` (`python train.py -m model=a,b seed=0,1
hydra.sweep.dir=DIR resume=true`) skips the jobs that finished (their `metrics.json` is returned as the job's
result), resumes the ones that were cut off from their newest checkpoint and starts the others. Job `N` lives in
`DIR/N`, and Hydra's basic sweeper numbers the grid the same way on every run of the same command. As a guard, a
directory whose recorded overrides are not those of the job that would reuse it stops the sweep (with the basic
sweeper before any job runs, with others when that job starts). Without `resume=true`, a job whose directory holds
a finished run trains again and replaces its results (with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fer_lightning.checkpoint import checkpoint_global_step
from fer_lightning.sweep_summary import (
    ERROR_FILE,
    JOB_FILE,
    METRICS_FILE,
    collect_rows,
    job_identity,
    override_key,
    sort_rows,
    summary_markdown,
    write_summary,
)

log = logging.getLogger(__name__)

# set by Lightning's DDP launcher in the launching process
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# where a cut-off run left its state (conf/callbacks/default.yaml): every epoch end, and on Ctrl-C / SIGTERM
RESUMABLE_CHECKPOINTS = ("checkpoints/last.ckpt", "checkpoints/interrupted.ckpt")


class SweepResumeError(SystemExit):
    """resume=true found a job directory that holds another job's run.

    A SystemExit (status 1, the message on stderr) because Hydra turns the exceptions of callbacks into warnings,
    and this must stop the sweep.
    """


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict | None:
    """Run `task(cfg)`; in a multirun a failure is written to the job's `error.txt` and None returned, so the
    sweep goes on. A single run raises as usual (and exits non-zero). With `resume=true` a multirun job that
    finished earlier returns its recorded metrics, and one that was cut off continues from its checkpoint."""
    try:
        if cfg.get("resume") and in_multirun():
            recorded = resume_job(cfg)
            if recorded is not None:
                return recorded
        elif cfg.get("resume"):
            log.warning("resume=true applies to the jobs of a multirun; resume a run with ckpt_path=<checkpoint>")
        return task(cfg)
    except Exception:
        if not in_multirun():
            raise
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / ERROR_FILE).write_text(traceback.format_exc())
        log.exception("job %s failed; the sweep goes on (traceback in %s)", output_dir.name, output_dir / ERROR_FILE)
        return None


def resume_job(cfg: DictConfig) -> dict | None:
    """The recorded metrics of a finished job; otherwise None, with `cfg.ckpt_path` set to the job's newest
    checkpoint when it has one (a job that failed is retried the same way)."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    if (output_dir / METRICS_FILE).exists():
        metrics = json.loads((output_dir / METRICS_FILE).read_text())
        update_record(output_dir, resume="skipped")
        scores = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val/acc", "test/acc") if k in metrics)
        log.info("job %s skipped: it finished in an earlier run (%s): %s", output_dir.name, scores, output_dir)
        print(f"Skipped job {output_dir.name}, finished earlier: {scores}")
        return metrics
    checkpoint = newest_checkpoint(output_dir)
    if checkpoint is None:
        log.info("job %s has no result and no checkpoint: starting it", output_dir.name)
        return None
    with open_dict(cfg):
        cfg.ckpt_path = str(checkpoint)
    update_record(output_dir, resume=f"from {checkpoint.name}")
    log.info("job %s was cut off: resuming it from %s", output_dir.name, checkpoint)
    print(f"Resuming job {output_dir.name} from {checkpoint}")
    return None


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint furthest into training among last.ckpt and interrupted.ckpt, by global step, then by time.

    Either can be the newer one: interrupted.ckpt is written mid-epoch on Ctrl-C / SIGTERM, last.ckpt at every
    epoch end, so after a resumed run went on for a while its old interrupted.ckpt is stale. The step comes from
    the file itself (modification times do not survive every copy); one that cannot be read (killed while being
    written) is passed over.
    """
    found = []
    for path in (run_dir / name for name in RESUMABLE_CHECKPOINTS):
        if not path.is_file():
            continue
        try:
            step = checkpoint_global_step(path)
        except Exception as error:
            log.warning("cannot resume from %s (%s: %s); passing it over", path, type(error).__name__, error)
            continue
        found.append((step, path.stat().st_mtime_ns, path))
    return max(found)[2] if found else None


def read_record(job_dir: Path) -> dict:
    path = job_dir / JOB_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def update_record(job_dir: Path, **fields: Any) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / JOB_FILE).write_text(json.dumps(read_record(job_dir) | fields, indent=2) + "\n")


def recorded_overrides(job_dir: Path, hydra_record: bool = True) -> list[str] | None:
    """The overrides of the job that ran in `job_dir`: our `job.json`, else Hydra's `.hydra/overrides.yaml`.

    Hydra rewrites `.hydra/` with the new job's overrides before any job code runs, so once a job has started only
    `job.json` still tells what was there before (`hydra_record=False`).
    """
    record = read_record(job_dir)
    if "overrides" in record:
        return job_identity(record["overrides"])
    hydra_file = job_dir / ".hydra" / "overrides.yaml"
    if hydra_record and hydra_file.exists():
        return job_identity(OmegaConf.load(hydra_file))
    return None


def check_same_job(job_dir: Path, recorded: list[str] | None, overrides: list[str], num: int) -> None:
    """Refuse to skip or resume into a directory written by another job (order-insensitive: the order of the
    keys on the command line changes how overrides are listed, not which job it is)."""
    current = job_identity(overrides)
    if recorded is None or sorted(recorded) == sorted(current):
        return
    was, now = sorted(set(recorded) - set(current)), sorted(set(current) - set(recorded))
    message = (
        f"resume=true: {job_dir} holds another job than job {num} of this sweep.\n"
        f"  recorded there: {' '.join(recorded)}\n"
        f"  job {num} now:     {' '.join(current)}\n"
        f"  (differing: {' '.join(was) or '-'} -> {' '.join(now) or '-'})\n"
        "The sweep's values (or the order of its keys, which numbers the jobs) changed since that directory was "
        "written: re-run the original command, or sweep into a new hydra.sweep.dir."
    )
    raise SweepResumeError(message)


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """The basic sweeper's jobs in launch order (job N is entry N), expanded by the sweeper's own code.

    None for other sweepers (Optuna picks its trials as it goes) and for sweeps that cannot be expanded here
    (`glob(...)` needs the config loader): then each job checks its own directory when it starts.
    """
    if not str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    # private module, but the very function the sweeper numbers its jobs with (hydra-core is pinned < 1.4)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as error:
        log.debug("cannot expand the sweep ahead of its jobs (%s); each job checks its own directory", error)
        return None


def check_sweep_dir(config: DictConfig) -> None:
    """Before any job runs (and before Hydra rewrites their `.hydra/`): every job directory of the sweep
    directory must hold the job of the same number in this sweep."""
    sweep_dir, jobs = Path(config.hydra.sweep.dir), planned_jobs(config)
    numbered = OmegaConf.to_container(config.hydra.sweep)["subdir"] == "${hydra.job.num}"  # unresolved
    if jobs is None or not numbered or not sweep_dir.is_dir():
        return
    job_dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for job_dir in sorted(job_dirs, key=lambda p: int(p.name)):
        num = int(job_dir.name)
        if num < len(jobs):
            check_same_job(job_dir, recorded_overrides(job_dir), jobs[num], num)
        elif recorded_overrides(job_dir) is not None:
            log.warning("%s is not one of this sweep's %d jobs; it is left as it is", job_dir, len(jobs))


class SweepSummary(Callback):
    """Hydra callback (registered in conf/hydra/default.yaml): the resume guard, per-job records, the summary."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume"):
            check_sweep_dir(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Record the job in `job.json` as it starts, so a killed job still says which job it was."""
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        output_dir, num = Path(config.hydra.runtime.output_dir), int(config.hydra.job.num)
        overrides = list(config.hydra.overrides.task)
        if config.get("resume"):  # the guard for sweepers check_sweep_dir cannot expand
            check_same_job(output_dir, recorded_overrides(output_dir, hydra_record=False), overrides, num)
        elif (output_dir / METRICS_FILE).exists():
            log.warning("job %d: %s holds a finished run; training it again (resume=true skips it)", num, output_dir)
            # the old result must not pass for this run's if this one is killed
            (output_dir / METRICS_FILE).unlink()
        (output_dir / ERROR_FILE).unlink(missing_ok=True)  # the error of an earlier attempt
        (output_dir / JOB_FILE).unlink(missing_ok=True)
        update_record(output_dir, job=num, overrides=job_identity(overrides), status="running")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        output_dir = Path(config.hydra.runtime.output_dir)
        error_file = output_dir / ERROR_FILE
        error = ""
        if job_return.status == JobStatus.FAILED:
            error = f"{type(job_return._return_value).__name__}: {job_return._return_value}"
        elif error_file.exists():
            error = last_line(error_file.read_text())
        overrides = job_identity(job_return.overrides or [])
        status = "failed" if error else "ok"
        update_record(output_dir, job=int(config.hydra.job.num), overrides=overrides, status=status, error=error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = sort_rows(collect_rows(sweep_dir))
        write_summary(sweep_dir, rows)
        ok = sum(row["status"] == "ok" for row in rows)
        log.info("sweep summary (%d ok, %d not): %s", ok, len(rows) - ok, sweep_dir / "summary.md")
        print(f"\n{summary_markdown(sweep_dir, rows)}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextmanager
def multirun_ddp_job(ckpt_path: str | None = None) -> Iterator[None]:
    """Let a multirun job train with Lightning's DDP launcher (`trainer=ddp` on one machine) like a single run.

    The launcher re-runs `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>` for ranks > 0: inside a multirun job
    that is the whole sweep again (`-m`, every swept value) in a directory of its own. Here it re-runs this job
    alone, as a single run in this job's directory, from the checkpoint this rank resumes from (`ckpt_path`, which
    resume=true may have chosen: every rank must load the same one). Afterwards the launcher's environment
    variables (LOCAL_RANK would make the next job believe its ranks already exist) and the process group are
    cleared.
    """
    if not in_multirun() or "LOCAL_RANK" in os.environ:
        yield  # a single run, or processes started by SLURM / torchrun: nothing to arrange
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_env = sys.argv, {key: os.environ.get(key) for key in DDP_LAUNCH_ENV}
    overrides = [o for o in hydra_cfg.overrides.task if override_key(o) not in ("resume", "ckpt_path")]
    if ckpt_path:
        overrides.append(f'ckpt_path="{ckpt_path}"')  # quoted, as Lightning quotes hydra.run.dir
    sys.argv = [sys.argv[0], *overrides, "hydra.mode=RUN"]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

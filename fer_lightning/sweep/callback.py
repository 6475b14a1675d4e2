"""`SweepSummary`, the Hydra callback of every multirun (conf/hydra/default.yaml): a `job.json` record per job, the
guard that keeps `resume=true` from reusing another job's directory, and the summary tables at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer_lightning.sweep.jobs import read_record, update_record
from fer_lightning.sweep.summary import (
    ERROR_FILE,
    JOB_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    collect_rows,
    job_identity,
    read_overrides,
    sort_rows,
    summary_markdown,
    write_summary,
)
from fer_lightning.utils.html_report import write_html_report_safely

log = logging.getLogger(__name__)


class SweepResumeError(SystemExit):
    """resume=true found a job directory that holds another job's run.

    A SystemExit (status 1, the message on stderr) because Hydra turns the exceptions of callbacks into warnings,
    and this must stop the sweep.
    """


def recorded_overrides(job_dir: Path, hydra_record: bool = True) -> list[str] | None:
    """The overrides of the job that ran in `job_dir`: our `job.json`, else Hydra's `.hydra/overrides.yaml`.

    Hydra rewrites `.hydra/` with the new job's overrides before any job code runs, so once a job has started only
    `job.json` still tells what was there before (`hydra_record=False`).
    """
    record = read_record(job_dir)
    if "overrides" in record:
        return job_identity(record["overrides"])
    hydra_file = job_dir / OVERRIDES_FILE
    if hydra_record and hydra_file.exists():
        return job_identity(read_overrides(hydra_file))
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
        write_html_report_safely(sweep_dir)  # report.html; a failure is a warning, never the sweep's
        ok = sum(row["status"] == "ok" for row in rows)
        log.info("sweep summary (%d ok, %d not): %s", ok, len(rows) - ok, sweep_dir / "summary.md")
        print(f"\n{summary_markdown(sweep_dir, rows)}")
        if ok < len(rows):
            # the sweep went on past its failed jobs (each one a row, with its error.txt); the exit status says so
            raise SystemExit(f"{len(rows) - ok} of {len(rows)} sweep jobs failed: see {sweep_dir / 'summary.md'}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""

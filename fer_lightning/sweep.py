"""Sweeps: a failed job becomes a row instead of stopping the sweep, and every sweep ends with a summary table.

Each job's directory gets `job.json` (overrides and status, written by `SweepSummary.on_job_end` in the process
that ran the job, so any launcher works: basic, joblib, submitit) beside the run's `metrics.json`, or `error.txt`
when it failed. `on_multirun_end` collects them into `summary.csv` and `summary.md` in the sweep directory.
"""

from __future__ import annotations

import csv
import json
import logging
import math
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

log = logging.getLogger(__name__)

JOB_FILE, ERROR_FILE, METRICS_FILE = "job.json", "error.txt", "metrics.json"
# set by Lightning's DDP launcher in the launching process
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
METRIC_COLUMNS = ("val/acc", "test/acc", "test/f1_macro", "epochs", "wall_time_s")
COLUMNS = ("rank", "job", "status", "overrides", *METRIC_COLUMNS, "error", "dir")


def run_job(task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict | None:
    """Run `task(cfg)`; in a multirun a failure is written to the job's `error.txt` and None returned, so the
    sweep goes on. A single run raises as usual (and exits non-zero)."""
    try:
        return task(cfg)
    except Exception:
        if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / ERROR_FILE).write_text(traceback.format_exc())
        log.exception("job %s failed; the sweep goes on (traceback in %s)", output_dir.name, output_dir / ERROR_FILE)
        return None


@contextmanager
def multirun_ddp_job() -> Iterator[None]:
    """Let a multirun job train with Lightning's DDP launcher (`trainer=ddp` on one machine) like a single run.

    The launcher re-runs `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>` for ranks > 0: inside a multirun job
    that is the whole sweep again (`-m`, every swept value) in a directory of its own. Here it re-runs this job
    alone, as a single run in this job's directory. Afterwards the launcher's environment variables (LOCAL_RANK
    would make the next job believe its ranks already exist) and the process group are cleared.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN or "LOCAL_RANK" in os.environ:
        yield  # a single run, or processes started by SLURM / torchrun: nothing to arrange
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_env = sys.argv, {key: os.environ.get(key) for key in DDP_LAUNCH_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
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


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SweepSummary(Callback):
    """Hydra callback (registered in conf/hydra/default.yaml): per-job status, then the sweep's summary."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        output_dir = Path(config.hydra.runtime.output_dir)
        error_file = output_dir / ERROR_FILE
        record = {"job": int(config.hydra.job.num), "overrides": list(job_return.overrides or []), "error": ""}
        if job_return.status == JobStatus.FAILED:
            record["error"] = f"{type(job_return._return_value).__name__}: {job_return._return_value}"
        elif error_file.exists():
            record["error"] = last_line(error_file.read_text())
        record["status"] = "failed" if record["error"] else "ok"
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = sort_rows(collect_rows(sweep_dir))
        write_summary(sweep_dir, rows)
        ok = sum(row["status"] == "ok" for row in rows)
        log.info("sweep summary (%d ok, %d not): %s", ok, len(rows) - ok, sweep_dir / "summary.md")
        print(f"\n{summary_markdown(sweep_dir, rows)}")


def collect_rows(sweep_dir: Path) -> list[dict]:
    """One row per job directory (one holding `job.json`, `metrics.json` or Hydra's `.hydra/`)."""
    rows = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {name: job_dir / name for name in (JOB_FILE, METRICS_FILE, ".hydra/overrides.yaml")}
        if not any(path.exists() for path in files.values()):
            continue  # not a job directory
        record = json.loads(files[JOB_FILE].read_text()) if files[JOB_FILE].exists() else {}
        metrics = json.loads(files[METRICS_FILE].read_text()) if files[METRICS_FILE].exists() else {}
        if "overrides" not in record and files[".hydra/overrides.yaml"].exists():
            record["overrides"] = list(OmegaConf.load(files[".hydra/overrides.yaml"]))
        row = {"job": record.get("job", job_dir.name), "overrides": record.get("overrides", [])}
        row |= {key: metrics.get(key) for key in METRIC_COLUMNS}
        row["error"] = record.get("error", "" if metrics else "no result: killed, or still running")
        row["status"] = "failed" if row["error"] else "ok"
        row["dir"] = job_dir.name
        rows.append(row)
    return rows


def sort_rows(rows: list[dict], metric: str = "val/acc") -> list[dict]:
    """Successful jobs by `metric` (best first), then the failed ones by job number."""

    def key(row: dict) -> tuple:
        value = row.get(metric)
        usable = row["status"] == "ok" and isinstance(value, int | float) and not math.isnan(value)
        return (not usable, -value if usable else 0.0, str(row["job"]).zfill(8))

    ranked = sorted(rows, key=key)
    return [{"rank": i, **row} for i, row in enumerate(ranked, start=1)]


def write_summary(sweep_dir: Path, rows: list[dict]) -> None:
    """summary.csv with every override of every job; summary.md with those that vary, the shared ones above."""
    with (sweep_dir / "summary.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            cells = {key: "" if row.get(key) is None else row[key] for key in COLUMNS}
            writer.writerow(cells | {"overrides": " ".join(row["overrides"])})
    (sweep_dir / "summary.md").write_text(summary_markdown(sweep_dir, rows))


def format_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "wall_time_s":
        return f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def summary_markdown(sweep_dir: Path, rows: list[dict]) -> str:
    ok = sum(row["status"] == "ok" for row in rows)
    shared = set.intersection(*(set(row["overrides"]) for row in rows)) if rows else set()
    columns = [c for c in COLUMNS if c != "dir"]
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{len(rows)} jobs: {ok} ok, {len(rows) - ok} failed; sorted by val/acc (best first). Directory: {sweep_dir}",
        "",
        f"Overrides shared by every job: `{' '.join(o for o in rows[0]['overrides'] if o in shared)}`" if rows else "",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if c in METRIC_COLUMNS or c in ("rank", "job") else "---" for c in columns) + "|",
    ]
    for row in rows:
        cells = row | {"overrides": " ".join(o for o in row["overrides"] if o not in shared)}
        lines.append("| " + " | ".join(format_cell(c, cells.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"

"""Inside a sweep's job: a failure is recorded and the sweep goes on, `resume=true` skips or resumes the job, and a
multirun job can train with DDP (see the package docstring, fer_lightning/sweep/__init__.py)."""

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
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from fer_lightning.checkpoint import checkpoint_global_step
from fer_lightning.sweep.summary import ERROR_FILE, JOB_FILE, METRICS_FILE, override_key

log = logging.getLogger(__name__)

# set by Lightning's DDP launcher in the launching process
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# where a cut-off run left its state (conf/callbacks/default.yaml): every epoch end, and on Ctrl-C / SIGTERM
RESUMABLE_CHECKPOINTS = ("checkpoints/last.ckpt", "checkpoints/interrupted.ckpt")


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

"""SweepSummary, the sweep's Hydra callback: the resume guard matches job directories to the jobs of the sweep, and
every job records itself in job.json as it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer_lightning.sweep.callback import SweepResumeError, SweepSummary
from tests.sweep.test_summary import fake_job

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_config(sweep_dir: Path, task: list[str], resume: bool = True, sweeper: str = BASIC_SWEEPER) -> DictConfig:
    """The multirun config Hydra hands to `on_multirun_start`, reduced to what the resume guard reads."""
    hydra_cfg = {"sweeper": {"_target_": sweeper}, "overrides": {"task": task}}
    hydra_cfg["sweep"] = {"dir": str(sweep_dir), "subdir": "${hydra.job.num}"}
    return OmegaConf.create({"resume": resume, "hydra": hydra_cfg})


def test_resume_guard_matches_job_directories_to_the_grid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_job(tmp_path, "0", ["lr=1", "seed=0"], {"val/acc": 0.5})
    fake_job(tmp_path, "1", ["lr=1", "seed=1"])
    fake_job(tmp_path, "2", ["lr=1", "seed=2"])  # from a larger grid before
    guard = SweepSummary()
    # the same jobs, listed in another order; resume=true itself is not part of a job
    guard.on_multirun_start(sweep_config(tmp_path, ["seed=0,1", "lr=1", "resume=true"]))
    assert "not one of this sweep's 2 jobs" in caplog.text
    with pytest.raises(SweepResumeError, match=r"(?s)/1 holds another job than job 1.*seed=1 -> seed=3"):
        guard.on_multirun_start(sweep_config(tmp_path, ["lr=1", "seed=0,3", "resume=true"]))
    with pytest.raises(SweepResumeError, match="/0 holds another job than job 0"):
        guard.on_multirun_start(sweep_config(tmp_path, ["lr=1", "seed=1,0", "resume=true"]))  # numbered otherwise
    guard.on_multirun_start(sweep_config(tmp_path, ["lr=2", "seed=0,1"], resume=False))  # overwritten as before
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    guard.on_multirun_start(sweep_config(tmp_path, ["lr=2"], sweeper=optuna))  # no grid: each job checks itself


def job_config(job_dir: Path, num: int, task: list[str], resume: bool) -> DictConfig:
    hydra_cfg = {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(job_dir)}, "job": {"num": num}}
    return OmegaConf.create({"resume": resume, "hydra": hydra_cfg | {"overrides": {"task": task}}})


def test_a_job_checks_its_own_record_as_it_starts(tmp_path: Path) -> None:
    """For sweepers whose jobs are not known up front (Optuna): job.json is the record, since Hydra has already
    rewritten `.hydra/overrides.yaml` with the new job's overrides when job code first runs."""
    fake_job(tmp_path, "0", ["lr=1"], {"val/acc": 0.5})
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(["lr=2"]))
    with pytest.raises(SweepResumeError, match="recorded there: lr=1"):
        SweepSummary().on_job_start(job_config(tmp_path / "0", 0, ["lr=2", "resume=True"], resume=True))
    SweepSummary().on_job_start(job_config(tmp_path / "0", 0, ["lr=1", "resume=True"], resume=True))
    assert (tmp_path / "0" / "metrics.json").exists()  # left for run_job to skip the job
    record = json.loads((tmp_path / "0" / "job.json").read_text())
    assert record == {"job": 0, "overrides": ["lr=1"], "status": "running"}  # a job killed now still says which


def test_without_resume_a_finished_job_is_trained_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_job(tmp_path, "0", ["lr=1"], {"val/acc": 0.5})
    (tmp_path / "0" / "error.txt").write_text("Traceback ... of an earlier attempt")
    SweepSummary().on_job_start(job_config(tmp_path / "0", 0, ["lr=2"], resume=False))
    assert "holds a finished run; training it again" in caplog.text
    # if this run is killed, the directory must not pass for finished (or failed) with the old run's files
    assert not (tmp_path / "0" / "metrics.json").exists()
    assert not (tmp_path / "0" / "error.txt").exists()
    assert json.loads((tmp_path / "0" / "job.json").read_text())["overrides"] == ["lr=2"]

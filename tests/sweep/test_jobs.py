"""Sweeps: failed jobs are rows, not crashes; an interrupted sweep resumes where it stopped; run directories never
collide; every multirun ends with a sorted summary (test_summary.py); the resume guard (test_callback.py)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import hydra.core.utils
import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer_lightning.sweep.jobs import multirun_ddp_job, newest_checkpoint, run_job
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import run_script
from tests.sweep.test_summary import fake_job, read_summary

TINY = ["model=tiny_xception", "debug=limit", "data.batch_size=8", "logger=none"]


def test_joblib_multirun_survives_a_failed_job_and_writes_the_summary(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 16, "PublicTest": 8, "PrivateTest": 8})
    result = run_script(
        "train.py",
        "-m",
        "launcher=joblib",  # jobs in other processes: job.json comes from there, the summary from here
        f"data.path={data}",
        *TINY,
        "optimizer.lr=0.001,-1",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # every job ran; the failed one sets the exit status
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()  # the default sweep directory
    assert f"1 of 2 sweep jobs failed: see {sweep_dir / 'summary.md'}" in result.stderr
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["status"], r["overrides"].split()[-1]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.001"),
        ("1", "failed", "optimizer.lr=-1"),
    ]
    assert 0.0 <= float(rows[0]["val/acc"]) <= 1.0
    assert 0.0 <= float(rows[0]["test/acc"]) <= 1.0
    assert rows[0]["epochs"] == "2"
    assert float(rows[0]["wall_time_s"]) > 0
    assert rows[1]["error"] == "fer_lightning.config_schema.ConfigValueError: optimizer.lr=-1: expected a number > 0"
    assert "Traceback" in (sweep_dir / "1" / "error.txt").read_text()
    assert "| optimizer.lr=0.001 |" in (sweep_dir / "summary.md").read_text()


def test_a_failure_raises_in_a_single_run_and_is_recorded_in_a_multirun(tmp_path: Path) -> None:
    def fail(cfg: object) -> dict:
        raise ValueError("Invalid learning rate: -1")

    cfg = compose_train([], tmp_path)
    with pytest.raises(ValueError, match="Invalid learning rate"):  # train.py exits non-zero
        run_job(fail, cfg)
    cfg = compose_train(["hydra.mode=MULTIRUN"], tmp_path)
    assert run_job(fail, cfg) is None  # the sweep goes on
    assert "ValueError: Invalid learning rate: -1" in (tmp_path / "run" / "error.txt").read_text()


def test_optuna_search_records_failed_trials_and_goes_on(tmp_path: Path) -> None:
    # the shipped search space, with a learning rate that fails half the time
    config_dir = tmp_path / "conf"
    (config_dir / "hparams_search").mkdir(parents=True)
    (config_dir / "hparams_search" / "optuna_or_fail.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optuna\nhydra:\n  sweeper:\n    params:\n"
        "      optimizer.lr: choice(0.001, -1)\n"
    )
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 16, "PublicTest": 8, "PrivateTest": 8})
    sweep_dir = tmp_path / "search"
    result = run_script(
        "train.py",
        f"--config-dir={config_dir}",
        "hparams_search=optuna_or_fail",  # a multirun without -m
        "hydra.sweeper.n_trials=3",
        f"data.path={data}",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the failed trials set the exit status
    assert "sweep jobs failed" in result.stderr
    rows = read_summary(sweep_dir)
    assert len(rows) == 3
    for row in rows:  # every trial sampled all four parameters; only the negative learning rate fails
        assert {"optimizer.weight_decay", "module.mixup_alpha", "module.label_smoothing"} <= {
            override.split("=")[0] for override in row["overrides"].split()
        }
        assert row["status"] == ("failed" if "optimizer.lr=-1" in row["overrides"] else "ok"), row
    assert {row["status"] for row in rows} == {"ok", "failed"}  # the seeded sampler draws both
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["optimizer.lr"] == 0.001
    assert best.best_value == pytest.approx(float(rows[0]["val/acc"]))


def test_optuna_search_is_a_multirun_over_existing_keys(tmp_path: Path) -> None:
    cfg = compose_train(["hparams_search=optuna"], tmp_path)
    hydra_cfg = HydraConfig.get()
    assert hydra_cfg.mode == RunMode.MULTIRUN  # no -m needed
    assert "optuna" in hydra_cfg.sweeper._target_
    assert hydra_cfg.sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc"
    for key in hydra_cfg.sweeper.params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


@pytest.mark.parametrize(("launcher", "target"), [("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_options_compose(launcher: str, target: str, tmp_path: Path) -> None:
    cfg = compose_train([f"launcher={launcher}"], tmp_path)
    assert HydraConfig.get().launcher._target_.endswith(target)
    OmegaConf.resolve(cfg)
    if launcher == "slurm":  # one task per GPU, DDP over them
        assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 1)


# ----- resuming a sweep -------------------------------------------------------------------------------------------
class InterruptJobOnce(L.Callback):
    """Ctrl-C in the second epoch of multirun job `job`, once (it uses up the flag file): a sweep cut off mid-job."""

    def __init__(self, job: int, flag: str) -> None:
        self.job, self.flag = job, Path(flag)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and HydraConfig.get().job.num == self.job and self.flag.exists():
            self.flag.unlink()
            raise KeyboardInterrupt


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 16, "PublicTest": 8, "PrivateTest": 8})
    flag, sweep_dir = tmp_path / "interrupt_once", tmp_path / "sweep"
    flag.touch()
    interrupt = [f"+callbacks.interrupt.{key}={value}" for key, value in (("job", 1), ("flag", flag))]
    interrupt.append("+callbacks.interrupt._target_=tests.sweep.test_jobs.InterruptJobOnce")
    command = ["train.py", "-m", f"data.path={data}", *TINY, "seed=0,1,2", *interrupt, f"hydra.sweep.dir={sweep_dir}"]

    first = run_script(*command, cwd=tmp_path, timeout=180)
    assert first.returncode != 0  # Ctrl-C in job 1 ends the whole sweep: job 0 done, job 1 cut off, job 2 not begun
    assert (sweep_dir / "0" / "metrics.json").exists()
    assert not (sweep_dir / "1" / "metrics.json").exists()
    assert {"last.ckpt", "interrupted.ckpt"} <= {path.name for path in (sweep_dir / "1" / "checkpoints").iterdir()}
    assert not (sweep_dir / "2").exists()
    finished = (sweep_dir / "0" / "metrics.json").read_text()
    recorded = {job: list(OmegaConf.load(sweep_dir / job / ".hydra" / "overrides.yaml")) for job in ("0", "1")}

    second = run_script(*command, "resume=true", cwd=tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Skipped job 0, finished earlier" in second.stdout
    # interrupted.ckpt (mid epoch 1) is newer than last.ckpt (end of epoch 0)
    assert f"Resuming job 1 from {sweep_dir / '1' / 'checkpoints' / 'interrupted.ckpt'}" in second.stdout
    assert (sweep_dir / "0" / "metrics.json").read_text() == finished  # not trained again
    for job, overrides in recorded.items():  # the same command numbers its jobs the same way
        assert list(OmegaConf.load(sweep_dir / job / ".hydra" / "overrides.yaml")) == [*overrides, "resume=True"]
    rows = {row["job"]: row for row in read_summary(sweep_dir)}
    assert {job: (row["status"], row["resume"]) for job, row in rows.items()} == {
        "0": ("ok", "skipped"),
        "1": ("ok", "from interrupted.ckpt"),
        "2": ("ok", ""),
    }
    assert float(rows["0"]["val/acc"]) == json.loads(finished)["val/acc"]  # the skipped job's recorded metrics
    assert rows["1"]["epochs"] == "2"  # the resumed job finished its second epoch
    assert "| 1 | (the shared overrides) | 3 | 0 | 0 1 2 |" in (sweep_dir / "summary.md").read_text()


def test_resume_refuses_a_sweep_directory_of_other_jobs_before_running_any(tmp_path: Path) -> None:
    sweep_dir, common = tmp_path / "sweep", ["data.path=fer.csv", *TINY]
    fake_job(sweep_dir, "0", [*common, "seed=0"], {"val/acc": 0.5})
    fake_job(sweep_dir, "1", [*common, "seed=1"])  # cut off
    before = (sweep_dir / "1" / ".hydra" / "overrides.yaml").read_text()

    result = run_script(
        "train.py", "-m", *common, "seed=0,2", f"hydra.sweep.dir={sweep_dir}", "resume=true", cwd=tmp_path
    )

    assert result.returncode != 0
    assert f"resume=true: {sweep_dir / '1'} holds another job than job 1 of this sweep" in result.stderr
    assert f"recorded there: {' '.join(common)} seed=1\n" in result.stderr
    assert f"job 1 now:     {' '.join(common)} seed=2\n" in result.stderr
    assert "(differing: seed=1 -> seed=2)" in result.stderr
    assert (sweep_dir / "1" / ".hydra" / "overrides.yaml").read_text() == before  # Hydra did not get to rewrite it
    assert not (sweep_dir / "0" / "checkpoints").exists()
    assert not (sweep_dir / "summary.csv").exists()


def save_step(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(3)}}, path)
    return path


def test_a_job_resumes_from_its_checkpoint_furthest_into_training(tmp_path: Path) -> None:
    assert newest_checkpoint(tmp_path) is None
    last = save_step(tmp_path / "checkpoints" / "last.ckpt", 4)
    assert newest_checkpoint(tmp_path) == last
    interrupted = save_step(tmp_path / "checkpoints" / "interrupted.ckpt", 6)  # Ctrl-C mid epoch
    assert newest_checkpoint(tmp_path) == interrupted
    save_step(last, 8)  # the resumed run went on past it
    assert newest_checkpoint(tmp_path) == last
    save_step(interrupted, 8)  # the same step: the later file
    # two writes within one clock tick of the file system can share a modification time: make the order explicit
    later = last.stat().st_mtime_ns + 10**9
    os.utime(interrupted, ns=(later, later))
    assert newest_checkpoint(tmp_path) == interrupted
    interrupted.write_bytes(interrupted.read_bytes()[:100])  # killed while writing it
    assert newest_checkpoint(tmp_path) == last


def test_resume_returns_a_finished_jobs_metrics_and_continues_a_cut_off_one(tmp_path: Path) -> None:
    cfg = compose_train(["hydra.mode=MULTIRUN", "resume=true"], tmp_path)
    run = tmp_path / "run"
    (run / "metrics.json").parent.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"val/acc": 0.5, "test/acc": 0.4}))
    started = []

    def train(cfg: DictConfig) -> dict:
        started.append(cfg.ckpt_path)
        return {"val/acc": 0.6}

    assert run_job(train, cfg) == {"val/acc": 0.5, "test/acc": 0.4}
    assert started == []  # not trained again
    assert json.loads((run / "job.json").read_text())["resume"] == "skipped"
    (run / "metrics.json").unlink()
    assert run_job(train, cfg) == {"val/acc": 0.6}  # no result, no checkpoint: started
    assert started == [None]
    last = save_step(run / "checkpoints" / "last.ckpt", 4)
    run_job(train, cfg)
    assert started[-1] == str(last)
    assert json.loads((run / "job.json").read_text())["resume"] == "from last.ckpt"


def test_ddp_ranks_of_a_resumed_job_load_the_checkpoint_rank_0_chose(tmp_path: Path, monkeypatch) -> None:
    compose_train(["hydra.mode=MULTIRUN", "seed=3", "resume=true", "ckpt_path=/pretrained.ckpt"], tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=3,4", "resume=true", "ckpt_path=/pretrained.ckpt"])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    checkpoint = "/sweeps/a,b/1/checkpoints/last.ckpt"  # a comma would make an unquoted value a sweep
    with multirun_ddp_job(checkpoint):  # what Lightning's launcher re-runs for rank 1
        argv = list(sys.argv)
    assert argv == ["train.py", "seed=3", f'ckpt_path="{checkpoint}"', "hydra.mode=RUN"]
    assert compose_train(argv[1:-1], tmp_path / "rank1").ckpt_path == checkpoint


# ----- run directories ----------------------------------------------------------------------------------------------
class SameSecondClock(datetime):
    """Every call in the same second, a microsecond later than the one before."""

    calls = 0

    @classmethod
    def now(cls, tz: object = None) -> datetime:
        cls.calls += 1
        return datetime(2025, 1, 1, 12, 0, 0) + timedelta(microseconds=cls.calls)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecondClock)  # Hydra's `${now:...}` resolver reads it
    dirs = []
    for _ in range(2):  # two runs started back to back
        compose_train([], tmp_path)
        dirs.append((HydraConfig.get().run.dir, HydraConfig.get().sweep.dir))
    (run_a, sweep_a), (run_b, sweep_b) = dirs
    assert "_12-00-00_" in run_a  # the same second
    assert "_12-00-00_" in run_b
    assert run_a != run_b
    assert sweep_a != sweep_b

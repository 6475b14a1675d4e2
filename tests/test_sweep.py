"""Sweeps: failed jobs are rows, not crashes; every multirun ends with a sorted summary.csv / summary.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from fer_lightning.sweep import collect_rows, run_job, sort_rows, write_summary
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import run_script

TINY = ["model=tiny_xception", "debug=limit", "data.batch_size=8", "logger=none"]


def read_summary(sweep_dir: Path) -> list[dict]:
    with (sweep_dir / "summary.csv").open() as file:
        return list(csv.DictReader(file))


def fake_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None = None, error: str = "") -> None:
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    if metrics is not None or error:
        record = {"job": int(name), "overrides": overrides, "status": "failed" if error else "ok", "error": error}
        (job_dir / "job.json").write_text(json.dumps(record))


def test_summary_sorts_by_val_acc_and_keeps_failed_and_killed_jobs(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["lr=1", "seed=1"], {"val/acc": 0.40, "test/acc": 0.38, "epochs": 3, "wall_time_s": 75.0})
    fake_job(tmp_path, "1", ["lr=2", "seed=1"], error="ValueError: Invalid learning rate: -1")
    fake_job(tmp_path, "2", ["lr=3", "seed=1"], {"val/acc": 0.55, "test/acc": 0.52, "epochs": 3, "wall_time_s": 9.5})
    fake_job(tmp_path, "3", ["lr=4", "seed=1"])  # started (Hydra wrote its overrides), never finished
    (tmp_path / ".submitit").mkdir()  # launcher folders are not jobs

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    rows = read_summary(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [("2", "ok"), ("0", "ok"), ("1", "failed"), ("3", "failed")]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["overrides"] == "lr=3 seed=1"
    assert float(rows[0]["val/acc"]) == 0.55
    assert rows[2]["error"] == "ValueError: Invalid learning rate: -1"
    assert "no result" in rows[3]["error"]
    markdown = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 2 ok, 2 failed" in markdown
    assert "shared by every job: `seed=1`" in markdown
    assert "| 1 | 2 | ok | lr=3 | 0.5500 | 0.5200 |  | 3 | 9.5 s |  |" in markdown
    assert "1.2 min" in markdown


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
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()  # the default sweep directory
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["status"], r["overrides"].split()[-1]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.001"),
        ("1", "failed", "optimizer.lr=-1"),
    ]
    assert 0.0 <= float(rows[0]["val/acc"]) <= 1.0
    assert 0.0 <= float(rows[0]["test/acc"]) <= 1.0
    assert rows[0]["epochs"] == "2"
    assert float(rows[0]["wall_time_s"]) > 0
    assert rows[1]["error"] == "ValueError: Invalid learning rate: -1"
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
    assert result.returncode == 0, result.stderr[-3000:]
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

"""train.py end to end: through Hydra in a subprocess, and in-process with the report files checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fer_lightning.errors import UserError
from fer_lightning.training import build_run, run_training
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]


def run_train_script(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_limited_run_writes_checkpoints_metrics_and_reports(fer_csv: Path, tmp_path: Path) -> None:
    cfg = compose_train([f"data.path={fer_csv}", "debug=limit", "logger=csv"], tmp_path)
    metrics = run_training(cfg)
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("val/acc", "test/acc", "test/f1_macro", "epochs"):
        assert saved[key] == pytest.approx(metrics[key])
    assert 0.0 <= saved["test/acc"] <= 1.0
    assert set(saved["test/per_class_acc"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert Path(saved["best_checkpoint"]).exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "confusion_matrix_test.png").stat().st_size > 1000
    report = json.loads((run / "per_class_test.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 14  # every PrivateTest row counted once
    assert "data:" in (run / "config_resolved.yaml").read_text()


def test_train_script_fast_dev_run_through_hydra(fer_csv: Path, tmp_path: Path) -> None:
    result = run_train_script(
        f"data.path={fer_csv}", "debug=fast_dev_run", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final metrics" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] >= 0.0


def test_missing_data_stops_with_path_source_and_alternative(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fer2013.csv"
    result = run_train_script(f"data.path={missing}", "debug=fast_dev_run", cwd=tmp_path)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert str(missing) in message
    assert "kaggle.com" in message
    assert "data=synthetic" in message


def test_sync_batchnorm_on_the_cpu_names_ddp_cpu_before_any_work(tmp_path: Path) -> None:
    cfg = compose_train(["trainer=ddp", "trainer.accelerator=cpu", "data.path=/nowhere/fer2013.csv"], tmp_path)
    with pytest.raises(UserError, match="trainer=ddp_cpu"):  # raised before the (missing) data is read
        build_run(cfg)

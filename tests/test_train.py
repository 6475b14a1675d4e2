"""train.py end to end: through Hydra in a subprocess, and in-process with the report files checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest

from fer_lightning.checkpoint import CheckpointError
from fer_lightning.errors import UserError
from fer_lightning.models.table import count_macs
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


def test_report_tta_adds_view_accuracies_and_the_models_costs(fer_csv: Path, tmp_path: Path) -> None:
    cfg = compose_train([f"data.path={fer_csv}", "debug=limit", "logger=csv", "+tta@report_tta.flip=flip"], tmp_path)
    metrics = run_training(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert 0.0 <= saved["test_flip/acc"] <= 1.0
    assert saved["test_flip/acc"] == pytest.approx(metrics["test_flip/acc"])
    # the test report stays the single-view one the checkpoint is reported with
    confmat = json.loads((Path(cfg.paths.output_dir) / "per_class_test.json").read_text())["confusion_matrix"]
    assert sum(confmat[i][i] for i in range(len(confmat))) / sum(map(sum, confmat)) == pytest.approx(saved["test/acc"])
    net = hydra.utils.instantiate(cfg.model)
    assert saved["params"] == sum(p.numel() for p in net.parameters())
    assert saved["macs"] == count_macs(net, 48, 1)
    assert saved["train_images_per_s"] > 0


def test_train_script_fast_dev_run_through_hydra(fer_csv: Path, tmp_path: Path) -> None:
    result = run_train_script(
        f"data.path={fer_csv}", "debug=fast_dev_run", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final metrics" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] >= 0.0
    # Lightning says checkpointing is suppressed; its ModelCheckpoint still wrote last.ckpt at train end
    assert "checkpointing is suppressed" in result.stdout + result.stderr
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_missing_data_stops_with_path_source_and_alternative(tmp_path: Path) -> None:
    """Before the config tree, the speed autotune or any model: one message, printed once, and no run directory."""
    missing = tmp_path / "nowhere" / "fer2013.csv"
    result = run_train_script(f"data.path={missing}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr + result.stdout
    assert message.count(f"FER2013 data not found at {missing}") == 1
    assert "kaggle.com" in message
    assert "data=synthetic" in message
    assert len(message.splitlines()) < 10
    assert "Traceback" not in message
    assert "speed autotune" not in message
    assert not (tmp_path / "run").exists()


def test_sync_batchnorm_on_the_cpu_names_ddp_cpu_before_any_work(tmp_path: Path) -> None:
    overrides = ["trainer=ddp", "trainer.sync_batchnorm=true", "trainer.accelerator=cpu"]  # off by default
    cfg = compose_train([*overrides, "data.path=/nowhere/fer2013.csv"], tmp_path)
    with pytest.raises(UserError, match="trainer=ddp_cpu"):  # raised before the (missing) data is read
        build_run(cfg)


def test_resume_from_a_file_that_is_no_checkpoint_stops_before_fit(fer_csv: Path, tmp_path: Path) -> None:
    """Lightning alone would fail on it with `IndexError: pop from empty list` (tests/test_checkpoint.py has the
    other model's and the unsafe pickle's cases)."""
    (tmp_path / "notes.ckpt").write_text("these are not weights")
    overrides = [f"data.path={fer_csv}", "model=tiny_xception", "debug=fast_dev_run", "speed.autotune=false"]
    cfg = compose_train([*overrides, f"ckpt_path={tmp_path / 'notes.ckpt'}"], tmp_path)
    with pytest.raises(CheckpointError, match=r"notes\.ckpt: cannot be read as a PyTorch checkpoint"):
        run_training(cfg)


def test_the_training_rate_covers_the_whole_fit_not_the_selected_checkpoint(fer_csv: Path, tmp_path: Path) -> None:
    # the first epoch's checkpoint is selected (least training time): testing it restores its callbacks' state
    selects_first = ["callbacks.model_checkpoint.monitor=time/train_s", "callbacks.model_checkpoint.mode=min"]
    cfg = compose_train([f"data.path={fer_csv}", "debug=limit", "data.batch_size=4", *selects_first], tmp_path)
    metrics = run_training(cfg)
    assert "epoch_000" in metrics["best_checkpoint"]
    images = metrics["train_images_per_s"] * metrics["train_s"]
    assert images == pytest.approx(2 * 5 * 4)  # 2 epochs of 5 batches of 4

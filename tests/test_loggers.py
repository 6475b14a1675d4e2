"""Loggers: W&B offline by itself without an API key, read back from its run file; CSV + TensorBoard + W&B at once."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from fer_lightning.loggers import wandb_api_key_configured, wandb_mode
from fer_lightning.tools.wandb_offline import read_offline_run
from fer_lightning.training import run_training
from tests.conftest import compose_train
from tests.scripts import one_thread, script_env  # noqa: F401 (fixture)


@pytest.fixture
def no_wandb_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A W&B environment with no API key anywhere and every W&B file under tmp_path."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in script_env(tmp_path).items():
        if key.startswith(("WANDB_", "NETRC")):
            monkeypatch.setenv(key, value)
    return tmp_path


def test_mode_is_offline_without_an_api_key_and_online_with_one(
    no_wandb_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not wandb_api_key_configured()
    assert wandb_mode() == "offline"
    assert wandb_mode("disabled") == "disabled"
    netrc = no_wandb_credentials / "no_netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password not-a-real-key\n")
    assert wandb_mode() == "online"
    netrc.unlink()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


@pytest.mark.usefixtures("one_thread")
def test_many_loggers_and_what_the_offline_wandb_run_recorded(
    no_wandb_credentials: Path, fer_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_train([f"data.path={fer_csv}", "model=tiny_xception", "debug=limit", "logger=many"], tmp_path)
    with open_dict(cfg):
        cfg.logger.wandb.project = "fer-tests"
        cfg.logger.wandb.tags = ["ci"]
        cfg.callbacks.wandb_test_predictions.num_samples = 5
    metrics = run_training(cfg)
    run_dir = Path(cfg.paths.output_dir)

    (offline_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline_dir}" in capsys.readouterr().out
    run = read_offline_run(offline_dir)
    assert (run.run["project"], run.run["tags"], run.run["name"]) == ("fer-tests", ["ci"], run_dir.name)
    assert run.config["data"]["batch_size"] == cfg.data.batch_size  # the resolved run config
    assert run.config["model_config"]["name"] == "tiny_xception"  # the module's hyperparameters
    for key in ("val/acc", "val/loss", "test/acc", "test/f1_macro"):
        assert run.summary[key] == pytest.approx(metrics[key]), key
    history_keys = set().union(*run.history)
    assert {"train/loss", "train/acc", "train/lr", "val/acc", "test/acc", "trainer/global_step"} <= history_keys
    assert [row["epoch"] for row in run.history if "train/loss" in row] == [0, 1]
    assert run.summary["test/predictions._type"] == "table-file"
    assert run.summary["test/predictions.nrows"] == 5
    assert run.summary["test/confusion_matrix_table._type"] == "table-file"
    assert run.summary["test/confusion_matrix_table.nrows"] == 7 * 7
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert any("best" in a["aliases"] for a in models)

    with (run_dir / "csv" / "metrics.csv").open() as file:
        assert float([r for r in csv.DictReader(file) if r["test/acc"]][0]["test/acc"]) == metrics["test/acc"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "metrics.json").read_text())["test/acc"] == pytest.approx(metrics["test/acc"])


def test_an_empty_wandb_mode_counts_as_unset(
    no_wandb_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "")
    logger = instantiate(compose_train(["logger=wandb"], tmp_path).logger.wandb)
    assert logger._wandb_init["mode"] == "offline"
    assert logger.experiment.settings.mode == "offline"  # wandb.init ran; with WANDB_MODE="" it raised
    logger.experiment.finish()


def test_wandb_can_be_told_to_keep_checkpoints_local(no_wandb_credentials: Path, tmp_path: Path) -> None:
    cfg = compose_train(["logger=wandb", "logger.wandb.log_model=false", "logger.wandb.mode=disabled"], tmp_path)
    logger = instantiate(cfg.logger.wandb)
    assert logger._log_model is False
    assert logger._wandb_init["mode"] == "disabled"


def test_jobs_of_a_multirun_share_the_sweep_as_group(no_wandb_credentials: Path, tmp_path: Path) -> None:
    overrides = [
        "logger=wandb",
        "hydra.mode=MULTIRUN",
        f"hydra.sweep.dir={tmp_path}/sweeps/lr_search",
        "hydra.job.num=3",
    ]
    cfg = compose_train(overrides, tmp_path)
    logger = instantiate(cfg.logger.wandb)
    assert logger._wandb_init["group"] == "lr_search"
    assert logger._wandb_init["name"].startswith("3:")
    assert logger._wandb_init["mode"] == "offline"

    single = instantiate(compose_train(["logger=wandb"], tmp_path).logger.wandb)
    assert single._wandb_init["group"] is None
    assert single._wandb_init["name"] == "run"  # the run directory's name


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_continues_its_wandb_run(no_wandb_credentials: Path, fer_csv: Path, tmp_path: Path) -> None:
    base = [f"data.path={fer_csv}", "model=tiny_xception", "debug=limit", "logger=wandb"]
    run_training(compose_train([*base, "trainer.max_epochs=1"], tmp_path))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
    # resumed into a new run directory: the id comes from the checkpoint's run directory
    resumed_dir = tmp_path / "resumed" / "run"
    run_training(compose_train([*base, "trainer.max_epochs=2", f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    (first,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (resumed,) = (resumed_dir / "wandb").glob("offline-run-*")
    assert read_offline_run(first).run["id"] == first_id
    assert read_offline_run(resumed).run["id"] == first_id
    assert [r["epoch"] for r in read_offline_run(resumed).history if "train/loss" in r] == [1]
    # a fresh run (no checkpoint) starts a W&B run of its own
    run_training(compose_train([*base, "trainer.max_epochs=1"], tmp_path / "fresh"))
    (fresh,) = (tmp_path / "fresh" / "run" / "wandb").glob("offline-run-*")
    assert read_offline_run(fresh).run["id"] != first_id


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_keeps_its_csv_history(fer_csv: Path, tmp_path: Path) -> None:
    """Lightning's CSVLogger deletes metrics.csv when a resumed run starts in the same directory; ours keeps it."""
    base = [f"data.path={fer_csv}", "model=tiny_xception", "debug=limit", "logger=csv"]
    first = run_training(compose_train([*base, "trainer.max_epochs=1"], tmp_path))
    metrics_file = tmp_path / "run" / "csv" / "metrics.csv"
    with metrics_file.open() as file:
        first_rows = list(csv.DictReader(file))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resume_step = torch.load(checkpoint, weights_only=True)["global_step"]

    state = torch.load(checkpoint, weights_only=True)["callbacks"]
    (clock_state,) = [v for k, v in state.items() if k.startswith("TrainingClock")]
    assert 0 < clock_state["wall_seconds"] <= first["wall_time_s"]  # the first attempt's fit, up to the checkpoint

    resumed_cfg = compose_train([*base, "trainer.max_epochs=2", f"ckpt_path={checkpoint}"], tmp_path)
    resumed_started = time.time()
    resumed = run_training(resumed_cfg)
    resumed_s = time.time() - resumed_started
    # wall_time_s adds the earlier attempt's time up to its checkpoint (tests/callbacks/test_training_clock.py)
    assert resumed["wall_time_s"] <= resumed_s + clock_state["wall_seconds"]
    with metrics_file.open() as file:
        rows = list(csv.DictReader(file))
    assert [r["epoch"] for r in rows if r["val/acc"]][:2] == ["0", "1"]  # epoch 0 from the first run, then 1
    assert [r["epoch"] for r in rows if r["train/loss"]] == ["0", "1"]
    kept = [r for r in first_rows if int(r["step"]) < resume_step]
    assert [{k: r[k] for k in first_rows[0]} for r in rows[: len(kept)]] == kept  # verbatim, columns merged
    # the first run's final validate/test rows came after the checkpoint: set aside, not lost
    with (metrics_file.parent / f"metrics.replaced_from_step{resume_step}.csv").open() as file:
        replaced = list(csv.DictReader(file))
    assert float(replaced[-1]["test/acc"]) == pytest.approx(first["test/acc"])

"""Checkpoints that are truncated, foreign, of another model or hostile fail with errors naming file and need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fer_lightning.checkpoint import CheckpointError, load_module, read_checkpoint
from fer_lightning.lit_module import FERLitModule
from fer_lightning.models import create_model

MODEL_CONFIG = {"name": "tiny_xception", "num_classes": 7, "in_chans": 1}


def our_checkpoint(path: Path, model_config: dict = MODEL_CONFIG) -> Path:
    """What training saves, minus the training state: Lightning's dict with our hyperparameters."""
    module = FERLitModule(create_model(**model_config), optimizer=None, model_config=dict(model_config))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


class RunsCodeWhenUnpickled:
    """A pickle payload: unpickling calls os.system. `weights_only=True` must refuse it before running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_our_checkpoint_loads(tmp_path: Path) -> None:
    module = load_module(our_checkpoint(tmp_path / "ok.ckpt"))
    assert module(torch.zeros(2, 1, 48, 48, dtype=torch.uint8)).shape == (2, 7)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    good = our_checkpoint(tmp_path / "good.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt: cannot be read as a PyTorch checkpoint"):
        load_module(truncated)


def test_not_a_checkpoint_at_all(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="notes.ckpt: cannot be read"):
        read_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_plain_dict_is_not_ours(tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match=r"plain.ckpt: not a fer-lightning checkpoint.*'model_config'"):
        load_module(tmp_path / "plain.ckpt")


def test_lightning_checkpoint_of_another_project(tmp_path: Path) -> None:
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=r"missing: \['model_config', 'num_classes'\]"):
        load_module(tmp_path / "x.ckpt")


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"name": "simple_cnn"}, "'name': 'simple_cnn'.*Missing key"), ({"num_classes": 8}, "'num_classes': 8.*mismatch")],
    ids=["other-model", "other-class-count"],
)
def test_weights_of_another_model_or_class_count(tmp_path: Path, change: dict, expected: str) -> None:
    checkpoint = torch.load(our_checkpoint(tmp_path / "ours.ckpt"), weights_only=True)
    checkpoint["hyper_parameters"]["model_config"] |= change  # config says one model, weights are another's
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match=f"mismatch.ckpt: weights do not fit the model .*{expected}"):
        load_module(tmp_path / "mismatch.ckpt")


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "hyper_parameters": RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt: cannot be read"):
        load_module(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_unregistered_model_name(tmp_path: Path) -> None:
    checkpoint = torch.load(our_checkpoint(tmp_path / "ours.ckpt"), weights_only=True)
    checkpoint["hyper_parameters"]["model_config"]["name"] = "model_from_the_future"
    torch.save(checkpoint, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="future.ckpt: model_config .* builds no registered model"):
        load_module(tmp_path / "future.ckpt")

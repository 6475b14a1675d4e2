"""Checkpoints that are truncated, foreign, of another model or hostile fail with errors naming file and need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fer_lightning.checkpoint import CheckpointError, check_resume_checkpoint, load_module, read_checkpoint
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
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused: .* asks for posix\.system") as refused:
        load_module(tmp_path / "evil.ckpt")
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)  # torch's advice to load it anyway is not passed on


def test_unregistered_model_name(tmp_path: Path) -> None:
    checkpoint = torch.load(our_checkpoint(tmp_path / "ours.ckpt"), weights_only=True)
    checkpoint["hyper_parameters"]["model_config"]["name"] = "model_from_the_future"
    torch.save(checkpoint, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="future.ckpt: model_config .* builds no registered model"):
        load_module(tmp_path / "future.ckpt")


# The hyper_parameters of a checkpoint written before the package's modules moved (issue 17: optim.py ->
# schedulers.py, data/*.py -> data/formats/, sweep.py -> sweep/, ...), verbatim from `python train.py
# experiment=quickstart trainer.max_epochs=1 scheduler=warmup_cosine` on the code of commit 8922129.
PRE_MOVE_HPARAMS = {
    "num_classes": 7,
    "class_names": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "in_chans": 1,
    "label_smoothing": 0.0,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "model_config": {"name": "mini_xception", "num_classes": 7, "in_chans": 1, "l2": 0.01},
    "compile": False,
    "preprocessing": {
        "image_size": 48,
        "crop_size": None,
        "in_chans": 1,
        "mean": 0.5060653413217139,
        "std": 0.22287186793305278,
        "class_names": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    },
}


def package_paths(value: object) -> list[str]:
    """Every string in a checkpoint's plain data that names a module of the package (a dotted import path)."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in package_paths(key) + package_paths(item)]
    if isinstance(value, list | tuple):
        return [found for item in value for found in package_paths(item)]
    return [value] if isinstance(value, str) and value.startswith("fer_lightning") else []


def test_a_checkpoint_from_before_the_module_moves_loads(tmp_path: Path) -> None:
    """A checkpoint stores no import path (the model is rebuilt by registry name, the optimizer and scheduler from
    the run's config), so moving modules cannot break one; this one has the pre-move layout to the letter."""
    assert package_paths(PRE_MOVE_HPARAMS) == []
    net = create_model(**PRE_MOVE_HPARAMS["model_config"])
    module = FERLitModule(net, optimizer=None, model_config=dict(PRE_MOVE_HPARAMS["model_config"]))
    lightning_keys = {"epoch": 0, "global_step": 94, "pytorch-lightning_version": "2.6.6", "hparams_name": "kwargs"}
    schedule = {"base_lrs": [0.001], "last_epoch": 94, "_step_count": 95, "lr_lambdas": [{}]}  # warmup_cosine's
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": PRE_MOVE_HPARAMS, "lr_schedulers": [schedule]}
    torch.save(checkpoint | lightning_keys, tmp_path / "pre_move.ckpt")
    loaded = load_module(tmp_path / "pre_move.ckpt")
    assert loaded.hparams["preprocessing"]["mean"] == pytest.approx(0.50606534)
    assert loaded(torch.zeros(2, 1, 48, 48, dtype=torch.uint8)).shape == (2, 7)


class PlainObject:
    """Not a function, yet a pickled instance still needs its class, a global: refused as well."""


def this_run(model_config: dict = MODEL_CONFIG) -> FERLitModule:
    return FERLitModule(create_model(**model_config), optimizer=None, model_config=dict(model_config))


def test_resume_checks_a_checkpoint_of_this_runs_model(tmp_path: Path) -> None:
    check_resume_checkpoint(our_checkpoint(tmp_path / "ours.ckpt"), this_run())
    check_resume_checkpoint("last", this_run())  # Lightning's own names are left to Lightning


def test_resume_from_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("these are not weights")  # torch.load: IndexError: pop from empty list
    with pytest.raises(CheckpointError, match="notes.ckpt: cannot be read as a PyTorch checkpoint"):
        check_resume_checkpoint(tmp_path / "notes.ckpt", this_run())


def test_resume_from_another_models_checkpoint_names_both(tmp_path: Path) -> None:
    other = our_checkpoint(tmp_path / "cnn.ckpt", {**MODEL_CONFIG, "name": "simple_cnn"})
    expected = r"cnn\.ckpt: trained with model simple_cnn but this run is model tiny_xception: .*model=simple_cnn"
    with pytest.raises(CheckpointError, match=expected) as refused:
        check_resume_checkpoint(other, this_run())
    assert "\n" not in str(refused.value)
    assert len(str(refused.value)) < 400  # not a state_dict key dump
    eight = our_checkpoint(tmp_path / "eight.ckpt", {**MODEL_CONFIG, "num_classes": 8})
    with pytest.raises(CheckpointError, match=r"eight\.ckpt: its weights do not fit .* of other shapes, e\.g\. net\."):
        check_resume_checkpoint(eight, this_run())


@pytest.mark.parametrize(
    ("payload", "named"), [("code", r"posix\.system"), ("object", r"\S*test_checkpoint\.PlainObject")]
)
def test_resume_refuses_an_unsafe_pickle_naming_its_global(tmp_path: Path, payload: str, named: str) -> None:
    marker = tmp_path / "pwned"
    hostile = RunsCodeWhenUnpickled(marker) if payload == "code" else PlainObject()
    torch.save({"state_dict": {}, "hyper_parameters": hostile}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=rf"evil\.ckpt: refused: .*asks for {named}") as refused:
        check_resume_checkpoint(tmp_path / "evil.ckpt", this_run())
    assert "weights_only" not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not marker.exists()

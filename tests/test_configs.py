"""Every option of every config group composes and its nodes instantiate real code."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import cv2
import hydra
import lightning as L
import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fer_lightning.callbacks import TrainingClock
from fer_lightning.config import CONFIG_DIR
from fer_lightning.speed import resolve_precision
from tests.conftest import compose_train

GROUPS = [
    "model",
    "data",
    "aug",
    "tta",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
    "distill",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_two_options() -> None:
    for group in GROUPS:
        assert len(options(group)) >= 2, group


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_resolves(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}"]
    if option == "image_folder":  # its class count, channels and size are read from the tree at data.path
        for name in ("cat", "dog"):
            (tmp_path / "images" / name).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / "images" / name / "0.png"), np.zeros((32, 32), np.uint8))
        overrides.append(f"data.path={tmp_path / 'images'}")
    cfg = compose_train(overrides, tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.module.num_classes == cfg.data.num_classes == len(cfg.data.class_names)
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.model.in_chans == cfg.data.in_chans


@pytest.mark.parametrize("option", options("model"))
def test_model_option_instantiates(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"model={option}"], tmp_path)
    net = hydra.utils.instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module)


@pytest.mark.parametrize("option", options("aug"))
def test_aug_option_transforms_uint8_faces(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"aug={option}"], tmp_path)
    image = torch.randint(0, 256, (48, 48), dtype=torch.uint8).numpy()
    for node in (cfg.aug.train, cfg.aug.eval):
        if node is not None:
            out = hydra.utils.instantiate(node)(image=image)["image"]
            assert out.dtype == image.dtype
            assert out.shape[:2] == (cfg.aug.crop_size or 48,) * 2 or node is cfg.aug.eval


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_build(optimizer: str, scheduler: str, tmp_path: Path) -> None:
    cfg = compose_train([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = hydra.utils.instantiate(cfg.optimizer)(params=params)
    # step-wise schedules need a length, time-budget ones a training clock with a budget
    clock = TrainingClock(budget_s=60)
    trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=10, callbacks=[clock], world_size=1)
    lr_config = hydra.utils.instantiate(cfg.scheduler)(optimizer=opt, trainer=trainer)
    assert lr_config["interval"] in ("epoch", "step")
    assert lr_config["scheduler"].optimizer is opt


@pytest.mark.parametrize("option", [o for o in options("trainer") if o in ("default", "cpu")])
def test_cpu_trainer_options_instantiate(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"trainer={option}", "trainer.accelerator=cpu"], tmp_path)
    precision = resolve_precision(cfg.trainer.precision, torch.device("cpu"))  # `auto` is ours, not Lightning's
    assert isinstance(hydra.utils.instantiate(cfg.trainer, precision=precision), L.Trainer)


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options_instantiate(group: str, tmp_path: Path) -> None:
    for option in options(group):
        cfg = compose_train([f"{group}={option}"], tmp_path)
        for node in (cfg[group] or {}).values():
            if node is not None:
                assert hydra.utils.instantiate(node) is not None


def test_unknown_option_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="mini_xception") as error:
        compose_train(["model=mini_xeption"], tmp_path)
    assert "Available options" in str(error.value)


def test_misspelt_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_train(["trainer.max_epoch=3"], tmp_path)


# Trainer arguments that take objects: callbacks and logger come from their groups (training.py), plugins from code
OBJECT_ARGUMENTS = {"self", "callbacks", "logger", "plugins"}
# where conf/trainer/default.yaml departs from Lightning's defaults on purpose
PROJECT_CHOICES = {"default_root_dir", "min_epochs", "max_epochs", "devices", "precision", "log_every_n_steps",
                   "deterministic"}  # fmt: skip


def trainer_arguments() -> dict[str, object]:
    parameters = inspect.signature(L.Trainer.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name not in OBJECT_ARGUMENTS}


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_argument_is_a_key(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"trainer={option}"], tmp_path)
    assert sorted(set(trainer_arguments()) - set(cfg.trainer)) == []


def test_trainer_keys_default_to_lightnings_defaults(tmp_path: Path) -> None:
    cfg = compose_train([], tmp_path)  # listing an argument must not change what the Trainer does
    for name, default in trainer_arguments().items():
        if name not in PROJECT_CHOICES:
            assert cfg.trainer[name] == default, name


def test_trainer_arguments_are_overridden_without_plus(tmp_path: Path) -> None:
    overrides = ["trainer.fast_dev_run=true", "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=1.0"]
    cfg = compose_train(overrides, tmp_path)
    assert cfg.trainer.fast_dev_run is True
    assert cfg.trainer.accumulate_grad_batches == 2
    assert cfg.trainer.gradient_clip_val == 1.0


@pytest.mark.parametrize(("option", "workers"), [("gpu", 8), ("ddp", 4)])
def test_gpu_trainers_feed_the_gpu_and_autotune_cudnn(option: str, workers: int, tmp_path: Path) -> None:
    cfg = compose_train([f"trainer={option}", "aug=heavy"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.trainer.benchmark) == ("gpu", "bf16-mixed", True)
    assert cfg.trainer.sync_batchnorm is False  # a host sync per BatchNorm forward (issue 18); users may set it
    assert (cfg.data.num_workers, cfg.data.pin_memory) == (workers, True)  # the fallback for presets without `device:`
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.loader_kind == "device"  # `auto` with a device node: the splits on the GPU, no workers
    deterministic = compose_train([f"trainer={option}", "trainer.deterministic=true"], tmp_path)
    assert deterministic.trainer.benchmark is False  # cuDNN's autotuning would override cudnn.deterministic
    later = compose_train([f"trainer={option}", "experiment=resnet_depth", "data.num_workers=3"], tmp_path)
    assert later.data.num_workers == 3  # what experiments and the command line say still wins

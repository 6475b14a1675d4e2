"""Load fer-lightning checkpoints safely (`weights_only=True`) with errors that say what is wrong.

A checkpoint is Lightning's dict; ours carries `hyper_parameters.model_config` (the registry name and kwargs)
and `hyper_parameters.preprocessing` (input size, crop, channels, mean/std, class names), so a model can be
rebuilt and fed correctly without the run's config.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from lightning.pytorch.utilities.model_registry import _is_registry
from omegaconf import DictConfig, open_dict

from fer_lightning.errors import UserError
from fer_lightning.lit_module import FERLitModule
from fer_lightning.models import create_model

log = logging.getLogger(__name__)

# the lines of torch's weights_only message that advise loading the file anyway (weights_only=False, allowlisting):
# never repeated to a user, whose checkpoint should hold no code at all
TORCH_LOAD_ADVICE = (
    "weights_only",
    "Weights only load failed",
    "This file can still be loaded",
    "Please file an issue",
)
# `trainer.fit(ckpt_path=...)` names Lightning resolves to a file itself (and "registry[:name]", `_is_registry`)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")


class CheckpointError(UserError):
    """A file is not a usable fer-lightning checkpoint; the message names the file and the expectation."""


def first_line(error: BaseException) -> str:
    return next(iter(str(error).splitlines()), "")


def checkpoint_global_step(path: str | Path) -> int:
    """The optimizer steps a Lightning checkpoint was saved after; mmap: only this scalar leaves the disk."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with `weights_only=True`: no code in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # arbitrary bytes fail in many ways (IndexError, UnicodeDecodeError, ...)
        raise load_error(path, error) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    missing = [k for k in ("model_config", "num_classes") if k not in hparams]
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or missing:
        raise CheckpointError(
            f"{path}: not a fer-lightning checkpoint: expected a Lightning checkpoint with 'state_dict' and "
            f"hyper_parameters {['model_config', 'num_classes']} (missing: {missing or ['state_dict']})"
        )
    return checkpoint


def load_error(path: Path, error: Exception) -> CheckpointError:
    """Why torch.load failed, in one line: a pickle that asks for code (a global) is named as refused."""
    detail = unpickler_detail(error) if isinstance(error, pickle.UnpicklingError) else first_line(error)
    unsafe = re.search(r"GLOBAL (\S+)", detail)
    if unsafe:
        return CheckpointError(
            f"{path}: refused: the file's pickle asks for {unsafe[1]} ({detail}); a checkpoint is loaded as plain "
            f"data (tensors, numbers, strings) and no code in it is run: use a checkpoint saved by fer-lightning"
        )
    return CheckpointError(
        f"{path}: cannot be read as a PyTorch checkpoint (truncated, or not a checkpoint saved by torch.save "
        f"with plain data): {type(error).__name__}: {detail}"
    )


def unpickler_detail(error: pickle.UnpicklingError) -> str:
    """The unpickler's own finding inside torch's weights_only message, without torch's advice to load anyway."""
    text = str(error).rpartition("WeightsUnpickler error:")[2]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not any(advice in line for advice in TORCH_LOAD_ADVICE)]
    found = next((line for line in lines if not line.startswith("Check the documentation")), first_line(error))
    return found.partition(" Please use `torch.serialization")[0]  # its allowlisting advice: loading code anyway


def load_module(path: str | Path) -> FERLitModule:
    """Rebuild the network from the checkpoint's own model config and load its weights (strictly)."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    model_config = dict(hparams.pop("model_config"))
    try:
        net = create_model(**model_config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: model_config {model_config} builds no registered model: {error}") from None
    init_keys = ("num_classes", "class_names", "in_chans", "label_smoothing")
    module = FERLitModule(net, optimizer=None, model_config=model_config, **{k: hparams[k] for k in init_keys})
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]  # line 0 is generic
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes, {model_config}: "
            f"{(details or [first_line(error)])[0][:300]}"
        ) from None
    module.hparams["preprocessing"] = hparams.get("preprocessing", {})
    return module.eval()


def apply_checkpoint_preprocessing(cfg: DictConfig, preprocessing: dict) -> None:
    """The data must be fed as the model was trained: input size, crop and channels come from the checkpoint, and
    its mean/std (which the model's own buffers apply) are the data's, so none are computed from the train split."""
    with open_dict(cfg):
        for key in ("image_size", "in_chans", "mean", "std"):
            if preprocessing.get(key) is not None:
                cfg.data[key] = preprocessing[key]
        cfg.aug.crop_size = preprocessing.get("crop_size")
    if preprocessing.get("mean") is not None and preprocessing.get("std") is not None:
        log.info("normalisation from the checkpoint: mean %.4f, std %.4f", preprocessing["mean"], preprocessing["std"])


def check_num_classes(path: str | Path, module: FERLitModule, num_classes: int, data_path: str | Path) -> None:
    """A checkpoint evaluates only data with the classes it predicts."""
    if num_classes != module.hparams.num_classes:
        raise CheckpointError(
            f"{path} predicts {module.hparams.num_classes} classes but data {data_path} has {num_classes}"
        )


def match_data_classes(path: str | Path, module: FERLitModule, datamodule, data_path: str | Path) -> None:
    """The data's classes are mapped onto the checkpoint's by name (case-insensitively), never by position: an
    image folder's sorted folder names (angry, disgust, fear, happy, neutral, sad, surprise) evaluated with a FER2013
    checkpoint (..., sad, surprise, neutral) have their labels remapped to its order; other names are refused."""
    check_num_classes(path, module, datamodule.num_classes, data_path)
    trained, data_names = list(module.class_names), list(datamodule.class_names)
    lowered = [[name.lower() for name in names] for names in (trained, data_names)]
    if lowered[0] == lowered[1]:
        return
    if module.hparams.get("class_names") is None or trained == [str(i) for i in range(len(trained))]:
        log.warning("%s stores no class names: the data's class order %s is taken as its own", path, data_names)
        return
    if sorted(lowered[0]) != sorted(lowered[1]):
        raise CheckpointError(
            f"{path} predicts the classes {trained} but data {data_path} has the classes {data_names}: "
            f"a checkpoint evaluates only data of its own classes (the same names, in any order)"
        )
    log.warning(
        "data %s lists its classes as %s, checkpoint %s as %s: the data's labels are remapped by class name to the "
        "checkpoint's order", data_path, data_names, path, trained,
    )  # fmt: skip
    datamodule.order_classes_as(trained)


def check_resume_checkpoint(path: str | Path, module: FERLitModule) -> None:
    """Before `trainer.fit(ckpt_path=path)`, which would fail on a bad file with a bare IndexError, a state_dict
    key dump or torch's advice to load code: the file must be a fer-lightning checkpoint of this run's model."""
    if str(path) in LIGHTNING_CKPT_NAMES or _is_registry(path):
        return  # Lightning finds the file itself
    checkpoint = read_checkpoint(path)
    trained = dict(checkpoint["hyper_parameters"]["model_config"])
    this_run = dict(module.hparams.get("model_config") or {})
    if trained.get("name") != this_run.get("name"):
        raise CheckpointError(
            f"{path}: trained with model {trained.get('name')} but this run is model {this_run.get('name')}: "
            f"resume it with model={trained.get('name')} (its config: {trained})"
        )
    mismatch = state_dict_mismatch(checkpoint["state_dict"], module.state_dict())
    if mismatch:
        raise CheckpointError(
            f"{path}: its weights do not fit this run's model ({mismatch}): trained with {trained}, this run "
            f"builds {this_run}"
        )


def state_dict_mismatch(saved: dict, expected: dict) -> str:
    """'' when `saved` has exactly `expected`'s keys and shapes; else a short account (counts and a first key)."""
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    common = sorted(expected.keys() & saved.keys())
    reshaped = [key for key in common if getattr(saved[key], "shape", None) != getattr(expected[key], "shape", None)]
    named = {"missing": missing, "unexpected": unexpected}
    parts = [f"{len(keys)} {what}, e.g. {keys[0]}" for what, keys in named.items() if keys]
    if reshaped:
        key = reshaped[0]
        shapes = f"{tuple(saved[key].shape)} in the checkpoint, {tuple(expected[key].shape)} here"
        parts.append(f"{len(reshaped)} of other shapes, e.g. {key}: {shapes}")
    return "; ".join(parts)


def build_checkpoint(net: torch.nn.Module, model_config: dict, preprocessing: dict) -> dict:
    """The dict `load_module` reads, for a network whose weights come from elsewhere (imported, or a test's).

    Going through FERLitModule keeps the state_dict keys (`net.*`, `input_mean`, `input_std`) identical to those
    of a trained run, so imported models evaluate, predict and export through the same code paths.
    """
    class_names = list(preprocessing["class_names"])
    module = FERLitModule(
        net,
        optimizer=None,
        num_classes=len(class_names),
        class_names=class_names,
        in_chans=preprocessing["in_chans"],
        model_config=dict(model_config),
    )
    module.input_mean.fill_(preprocessing["mean"])
    module.input_std.fill_(preprocessing["std"])
    hparams = {**dict(module.hparams), "preprocessing": dict(preprocessing)}
    return {"state_dict": module.state_dict(), "hyper_parameters": hparams, "epoch": 0, "global_step": 0}


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path

"""Load fer-lightning checkpoints safely (`weights_only=True`) with errors that say what is wrong.

A checkpoint is Lightning's dict; ours carries `hyper_parameters.model_config` (the registry name and kwargs)
and `hyper_parameters.preprocessing` (input size, crop, channels, mean/std, class names), so a model can be
rebuilt and fed correctly without the run's config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from fer_lightning.errors import UserError
from fer_lightning.lit_module import FERLitModule
from fer_lightning.models import create_model


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
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated, or not a checkpoint saved by torch.save "
            f"with plain data): {type(error).__name__}: {first_line(error)}"
        ) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    missing = [k for k in ("model_config", "num_classes") if k not in hparams]
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or missing:
        raise CheckpointError(
            f"{path}: not a fer-lightning checkpoint: expected a Lightning checkpoint with 'state_dict' and "
            f"hyper_parameters {['model_config', 'num_classes']} (missing: {missing or ['state_dict']})"
        )
    return checkpoint


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
    """The data must be fed as the model was trained: input size, crop and channels come from the checkpoint."""
    with open_dict(cfg):
        for key in ("image_size", "in_chans"):
            if preprocessing.get(key) is not None:
                cfg.data[key] = preprocessing[key]
        cfg.aug.crop_size = preprocessing.get("crop_size")


def check_num_classes(path: str | Path, module: FERLitModule, num_classes: int, data_path: str | Path) -> None:
    """A checkpoint evaluates only data with the classes it predicts."""
    if num_classes != module.hparams.num_classes:
        raise CheckpointError(
            f"{path} predicts {module.hparams.num_classes} classes but data {data_path} has {num_classes}"
        )


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

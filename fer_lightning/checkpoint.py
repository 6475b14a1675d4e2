"""Load fer-lightning checkpoints safely (`weights_only=True`) with errors that say what is wrong.

A checkpoint is Lightning's dict; ours carries `hyper_parameters.model_config` (the registry name and kwargs)
and `hyper_parameters.preprocessing` (input size, crop, channels, mean/std, class names), so a model can be
rebuilt and fed correctly without the run's config.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from fer_lightning.lit_module import FERLitModule
from fer_lightning.models import create_model


class CheckpointError(ValueError):
    """A file is not a usable fer-lightning checkpoint; the message names the file and the expectation."""


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with `weights_only=True`: no code in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as error:
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated, or not a checkpoint saved by torch.save "
            f"with plain data): {str(error).splitlines()[0]}"
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
    net = create_model(**model_config)
    init_keys = ("num_classes", "class_names", "in_chans", "label_smoothing")
    module = FERLitModule(net, optimizer=None, model_config=model_config, **{k: hparams[k] for k in init_keys})
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit model {model_config.get('name')!r} with "
            f"{hparams['num_classes']} classes: {str(error).splitlines()[0]}"
        ) from None
    module.hparams["preprocessing"] = hparams.get("preprocessing", {})
    return module.eval()

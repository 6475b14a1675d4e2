"""`python export.py ckpt_path=model.ckpt format=onnx|torchscript` (`fer-export`): deployable models, verified.

The exported graph is the network with the checkpoint's normalisation baked in, so a consumer only divides
pixels by 255: input `images`, float32 (N, C, S, S) in [0, 1] with S the model's input size (the crop size
when it trained on crops) and gray repeated to C channels; output `logits` (N, classes), softmax for
probabilities. A calibrated checkpoint's temperature (`eval.py calibrate=true`) is in the graph too: its `logits`
are the network's divided by T, so their softmax gives the calibrated probabilities (argmax unchanged). The batch
dimension is dynamic. ONNX files carry the class names, preprocessing and temperature as metadata.

Every export is run back (ONNX Runtime, or the saved TorchScript file) on a batch of another size than the one
traced, and compared with the PyTorch model; a difference above `check.atol` (1e-5) fails the export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fer_lightning.calibration import checkpoint_temperature
from fer_lightning.checkpoint import load_module
from fer_lightning.errors import UserError
from fer_lightning.lit_module import FERLitModule

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportCheckError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


class InferenceModel(nn.Module):
    """Normalisation + network (+ the checkpoint's temperature): float pixels in [0, 1] -> logits, the function
    every export contains. Without a temperature (T = 1) the graph has no division by it."""

    def __init__(self, module: FERLitModule) -> None:
        super().__init__()
        self.net = module.net
        self.register_buffer("mean", module.input_mean.detach().clone())
        self.register_buffer("std", module.input_std.detach().clone())
        self.temperature = checkpoint_temperature(module.hparams.get("preprocessing"))  # a constant of the graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net((images - self.mean) / self.std)
        return logits if self.temperature == 1.0 else logits / self.temperature


def input_shape(module: FERLitModule) -> tuple[int, int, int]:
    """(C, S, S) the network sees: the crop size when the model trained on crops, else the image size."""
    info = module.hparams.get("preprocessing") or {}
    size = info.get("crop_size") or info.get("image_size") or 48
    return int(info.get("in_chans") or module.hparams.in_chans), int(size), int(size)


def example_batch(shape: tuple[int, int, int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=generator)


@contextlib.contextmanager
def quiet_torch_warnings() -> Iterator[None]:
    """Silence what torch 2.13 says from its own internals while exporting.

    It deprecates torch.jit and the legacy ONNX exporter, yet TorchScript files are what LibTorch (C++) loads
    and the issue asks for them; the tracer's warning is about mini_Xception's TF-style pooling pads being
    frozen, which depend only on the spatial size the checkpoint fixes, not on the batch. None of these tell
    a user of `export.py` anything to do.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
        yield


def export_onnx(model: InferenceModel, path: Path, example: torch.Tensor, opset: int = 18, dynamo: bool = True) -> Path:
    """torch.onnx with a dynamic batch; `dynamo=False` uses the legacy TorchScript-based exporter."""
    kwargs: dict = {"input_names": ["images"], "output_names": ["logits"], "opset_version": opset}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        kwargs["verbose"] = False
    else:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "logits": {0: "batch"}}
    for name in ("onnx_ir", "onnxscript"):  # their INFO lines list every optimisation pass
        logging.getLogger(name).setLevel(logging.WARNING)
    # warns once per torchvision op that it cannot register; our graphs use none of them
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with quiet_torch_warnings():
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=dynamo, external_data=False, **kwargs)
    return path


def add_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def onnx_session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session of an exported file; `threads` intra-op threads (0 = ONNX Runtime's default).

    One inter-op thread: the graphs run sequentially (ONNX Runtime's default mode), so more would only idle.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(path: Path, images: np.ndarray, threads: int = 0) -> np.ndarray:
    return onnx_session(path, threads).run(["logits"], {"images": images})[0]


def export_torchscript(model: InferenceModel, path: Path, example: torch.Tensor) -> Path:
    """Traced (the graph has no data-dependent control flow), so any registered model exports."""
    with torch.no_grad(), quiet_torch_warnings():
        traced = torch.jit.trace(model.eval(), example)
    traced.save(str(path))
    return path


def exported_outputs(fmt: str, path: Path, images: torch.Tensor) -> np.ndarray:
    """Run the file as a consumer would: ONNX Runtime, or torch.jit.load."""
    if fmt == "onnx":
        return onnx_outputs(path, images.numpy())
    with torch.no_grad(), quiet_torch_warnings():
        return torch.jit.load(str(path)).eval()(images).numpy()


def check_export(fmt: str, path: Path, model: InferenceModel, images: torch.Tensor, atol: float) -> float:
    """Max |exported - PyTorch| over the logits; raises ExportCheckError above `atol`."""
    with torch.no_grad():
        expected = model(images).numpy()
    got = exported_outputs(fmt, path, images)
    if got.shape != expected.shape:
        raise ExportCheckError(f"{path}: output shape {got.shape}, PyTorch gives {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise ExportCheckError(f"{path}: max |{fmt} - PyTorch| = {diff:.3g} > {atol:g}")
    return diff


def export_model(
    module: FERLitModule,
    fmt: str,
    path: Path,
    opset: int = 18,
    dynamo: bool = True,
    check_batch: int = 5,
    atol: float = 1e-5,
) -> dict:
    """Export and verify; returns what was written and the measured difference."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r}: choose one of {sorted(FORMATS)}")
    model = InferenceModel(module).eval()
    shape = input_shape(module)
    example = example_batch(shape, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        export_onnx(model, path, example, opset, dynamo)
        preprocessing = dict(module.hparams.get("preprocessing") or {})
        add_onnx_metadata(
            path,
            {
                "class_names": json.dumps(list(module.class_names)),
                "preprocessing": json.dumps(preprocessing),
                "input": f"float32 (N, {shape[0]}, {shape[1]}, {shape[2]}) gray pixels / 255, normalisation included",
                "temperature": json.dumps(model.temperature),
            },
        )
    else:
        export_torchscript(model, path, example)
    diff = check_export(fmt, path, model, example_batch(shape, check_batch, seed=1), atol)
    result = {"format": fmt, "path": str(path), "input_shape": [None, *shape], "max_abs_diff": diff, "atol": atol}
    return result | {"temperature": model.temperature}


def run_export(cfg: DictConfig) -> dict:
    if cfg.get("ckpt_path") in (None, "???"):
        raise UserError("export needs a checkpoint: python export.py ckpt_path=model.ckpt format=onnx")
    fmt = str(cfg.format)
    if fmt not in FORMATS:  # before the checkpoint is read: a wrong value costs no work
        raise UserError(f"format={fmt!r}: choose one of {sorted(FORMATS)}")
    module = load_module(cfg.ckpt_path)
    default = Path(cfg.output_dir) / (Path(cfg.ckpt_path).stem + FORMATS[fmt])
    path = Path(cfg.output_path) if cfg.get("output_path") else default
    result = export_model(module, fmt, path, cfg.opset, cfg.dynamo, cfg.check.batch_size, cfg.check.atol)
    print(
        f"Exported {cfg.ckpt_path} to {result['path']} ({fmt}, input {result['input_shape']}); "
        f"max |{fmt} - PyTorch| = {result['max_abs_diff']:.2e} (atol {result['atol']:g})"
    )
    return result

"""export: ONNX (through ONNX Runtime) and TorchScript files reproduce the PyTorch model's logits to 1e-5 on a
batch size other than the traced one (the inference benchmark: tests/bench/test_inference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_lightning.calibration import write_calibrated_checkpoint
from fer_lightning.checkpoint import build_checkpoint, load_module, save_checkpoint
from fer_lightning.export import InferenceModel, onnx_outputs, quiet_torch_warnings, run_export
from fer_lightning.models import create_model
from tests.conftest import compose_train

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# tiny batches: on a shared 2-core machine a second torch thread mostly waits
pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def checkpoint(path: Path, model: str = "mini_xception", image_size: int = 64, crop_size: int | None = None) -> Path:
    """An untrained model with non-trivial normalisation (mean 0.4, std 0.3), so a forgotten one would show."""
    torch.manual_seed(0)
    config = {"name": model, "num_classes": 7, "in_chans": 1}
    preprocessing = {"image_size": image_size, "crop_size": crop_size, "in_chans": 1, "mean": 0.4, "std": 0.3}
    net = create_model(**config)
    for module in net.modules():  # BN statistics away from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(build_checkpoint(net, config, {**preprocessing, "class_names": CLASSES}), path)


def export(ckpt: Path, fmt: str, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_train([f"ckpt_path={ckpt}", f"format={fmt}", *overrides], tmp_path, config_name="export")
    return run_export(cfg)


def reference(ckpt: Path, images: torch.Tensor) -> np.ndarray:
    """The FERLitModule itself, fed uint8 as in training: the export must match the module, not only its net."""
    with torch.no_grad():
        return load_module(ckpt)(images).numpy()


def test_onnx_matches_pytorch(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "m.ckpt")
    result = export(ckpt, "onnx", tmp_path)
    path = Path(result["path"])
    assert path == tmp_path / "run" / "m.onnx"
    assert result["max_abs_diff"] <= 1e-5

    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (7, 1, 64, 64), dtype=np.uint8))
    got = onnx_outputs(path, pixels.float().div(255).numpy())
    np.testing.assert_allclose(got, reference(ckpt, pixels), atol=1e-5, rtol=0)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["class_names"]) == CLASSES
    assert json.loads(metadata["preprocessing"])["mean"] == 0.4


def test_torchscript_matches_pytorch(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "m.ckpt", "simple_cnn", image_size=48, crop_size=44)
    result = export(ckpt, "torchscript", tmp_path, f"output_path={tmp_path / 'out' / 'model.pt'}")
    assert result["input_shape"] == [None, 1, 44, 44]
    assert result["max_abs_diff"] <= 1e-5

    pixels = torch.randint(0, 256, (3, 1, 44, 44), dtype=torch.uint8)
    with torch.no_grad(), quiet_torch_warnings():
        got = torch.jit.load(result["path"])(pixels.float() / 255).numpy()
    np.testing.assert_allclose(got, reference(ckpt, pixels), atol=1e-5, rtol=0)


def test_legacy_onnx_exporter_and_unknown_format(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "m.ckpt", "simple_cnn", image_size=48)
    assert export(ckpt, "onnx", tmp_path, "dynamo=false")["max_abs_diff"] <= 1e-5
    with pytest.raises(ValueError, match="torchscript"):
        export(ckpt, "tflite", tmp_path)


def test_inference_model_is_the_module(tmp_path: Path) -> None:
    module = load_module(checkpoint(tmp_path / "m.ckpt"))
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(InferenceModel(module)(images), module(images))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_calibrated_checkpoint_exports_its_temperature(fmt: str, tmp_path: Path) -> None:
    """The exported logits are the network's divided by T: ONNX Runtime / TorchScript match torch's to 1e-5, their
    softmax is the calibrated probabilities, their argmax the uncalibrated model's."""
    ckpt = checkpoint(tmp_path / "m.ckpt", "simple_cnn", image_size=48)
    calibrated = write_calibrated_checkpoint(ckpt, 2.5, {"split": "val"})
    result = export(calibrated, fmt, tmp_path)
    assert result["temperature"] == 2.5
    assert result["max_abs_diff"] <= 1e-5

    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 1, 48, 48), dtype=np.uint8))
    inputs = pixels.float().div(255)
    if fmt == "onnx":
        got = onnx_outputs(Path(result["path"]), inputs.numpy())
        metadata = {p.key: p.value for p in onnx.load(result["path"]).metadata_props}
        assert json.loads(metadata["temperature"]) == 2.5
        assert json.loads(metadata["preprocessing"])["temperature"] == 2.5
    else:
        with torch.no_grad(), quiet_torch_warnings():
            got = torch.jit.load(result["path"])(inputs).numpy()
    raw = reference(ckpt, pixels)
    np.testing.assert_allclose(got, raw / 2.5, atol=1e-5, rtol=0)
    probs = torch.from_numpy(got).softmax(-1)
    torch.testing.assert_close(probs, torch.from_numpy(raw / 2.5).softmax(-1), atol=1e-6, rtol=0)
    assert np.array_equal(got.argmax(-1), raw.argmax(-1))


def test_an_uncalibrated_export_has_temperature_one(tmp_path: Path) -> None:
    module = load_module(checkpoint(tmp_path / "m.ckpt", "simple_cnn", image_size=48))
    assert InferenceModel(module).temperature == 1.0

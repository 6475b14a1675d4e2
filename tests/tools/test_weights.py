"""fer-pack-weights: a weights-only file that loads as the training checkpoint did and predicts the same."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from fer_lightning.checkpoint import build_checkpoint, load_module, save_checkpoint
from fer_lightning.models import create_model
from fer_lightning.tools.weights import main, pack

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def training_checkpoint(path: Path) -> Path:
    """A checkpoint as a run saves it: weights plus an Adam state, loops and callbacks that the file must drop."""
    torch.manual_seed(0)
    config = {"name": "mini_xception", "num_classes": 7, "in_chans": 1}
    preprocessing = {"image_size": 48, "crop_size": None, "in_chans": 1, "mean": 0.51, "std": 0.25}
    checkpoint = build_checkpoint(create_model(**config), config, {**preprocessing, "class_names": CLASSES})
    weights = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
    checkpoint["optimizer_states"] = [
        {"state": {i: {"exp_avg": w.clone(), "exp_avg_sq": w.clone()} for i, w in enumerate(weights)}}
    ]
    checkpoint["loops"] = {"fit_loop": {"epoch_progress": {"total": 3}}}
    checkpoint["hyper_parameters"]["distill"] = {"teachers": ["/somewhere/teacher.ckpt"]}
    return save_checkpoint(checkpoint, path)


def test_packed_file_is_smaller_loads_and_predicts_the_same(tmp_path: Path) -> None:
    source = training_checkpoint(tmp_path / "best.ckpt")
    packed = pack(source, tmp_path / "weights" / "mx.ckpt")
    assert packed["bytes"] < source.stat().st_size / 2
    assert packed["sha256"] == hashlib.sha256(Path(packed["path"]).read_bytes()).hexdigest()
    original, small = load_module(source), load_module(packed["path"])
    assert small.hparams["preprocessing"] == original.hparams["preprocessing"]
    assert "distill" not in torch.load(packed["path"], weights_only=True)["hyper_parameters"]
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(small(images), original(images), rtol=0, atol=0)


def test_half_file_is_half_the_size_and_close(tmp_path: Path) -> None:
    source = training_checkpoint(tmp_path / "best.ckpt")
    full = pack(source, tmp_path / "full.ckpt")
    half = pack(source, tmp_path / "half.ckpt", half=True)
    assert half["bytes"] < 0.7 * full["bytes"]
    module = load_module(half["path"])
    assert all(p.dtype == torch.float32 for p in module.parameters())  # fp16 on disk, fp32 once loaded
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(module(images), load_module(source)(images), rtol=0.05, atol=0.05)


def test_packing_is_reproducible_and_main_prints_the_hash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = training_checkpoint(tmp_path / "best.ckpt")
    # the same name in another folder: torch.save names the archive's records after the file's stem
    first = pack(source, tmp_path / "a" / "mx.ckpt")["sha256"]
    main([str(source), str(tmp_path / "b" / "mx.ckpt")])
    assert f"sha256 {first}" in capsys.readouterr().out

"""fer-bench-inference: PyTorch, TorchScript and ONNX Runtime on one checkpoint, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.bench.inference import run as bench_run
from tests.test_export import checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_benchmark_runs_every_runtime(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = checkpoint(tmp_path / "m.ckpt")
    args = ["--ckpt", str(ckpt), "--iters", "3", "--repeats", "1", "--batch", "4", "--out", str(tmp_path / "b.json")]
    rows = bench_run(args)
    assert [r["runtime"] for r in rows] == ["pytorch", "pytorch channels_last", "torchscript", "onnxruntime"]
    assert all(r["batch4_images_per_s"] > 0 for r in rows)
    assert "| onnxruntime |" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["env"]["threads"] == 1

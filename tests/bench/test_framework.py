"""The benchmark command runs every path and writes what it printed; speed itself is measured by `make bench`,
never asserted here."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fer_lightning.bench.__main__ import run
from fer_lightning.bench.framework import on_training_device

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_times_every_path_and_writes_json_and_markdown(tmp_path: Path) -> None:
    argv = ["--models", "mini_xception", "aug=heavy", "--batches", "2", "--repeats", "2", "--workers", "0"]
    result = run([*argv, "--out", str(tmp_path), "--name", "smoke"])

    rows = result["rows"]
    assert [row["loader"] for row in rows] == ["workers", "device"]
    for row in rows:
        assert row["timed_images"] == 2 * row["batch_size"]
        speeds = ("bare_step_images_per_s", "framework_images_per_s", "plain_loop_images_per_s")
        assert all(row[key] > 0 for key in (*speeds, "latency_ms_batch1", "infer_images_per_s_batch256"))
        assert row["framework_efficiency"] == pytest.approx(row["framework_images_per_s"] / row[speeds[0]])
        assert row["framework_vs_plain"] == pytest.approx(row["framework_images_per_s"] / row[speeds[2]])
    assert (result["aug"], result["data"]) == ("heavy", None)  # the embedded data unless told otherwise
    assert json.loads((tmp_path / "smoke.json").read_text()) == json.loads(json.dumps(result))
    table = (tmp_path / "smoke.md").read_text()
    assert table.count("| mini_xception |") == 2
    assert "framework / plain" in table


def test_inference_is_timed_on_the_device_the_module_trained_on() -> None:
    # Lightning hands the module back on the CPU after fit; the meta device stands in for a GPU on a CPU machine
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    module = on_training_device(torch.nn.Linear(2, 2), trainer)
    assert {p.device.type for p in module.parameters()} == {"meta"}

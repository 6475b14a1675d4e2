"""fer-bench-loader: the train DataLoader and the device data path against the model step."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_lightning.bench import loader as bench_loader


def test_bench_loader_reports_both_rates(fer_csv: Path, tmp_path: Path) -> None:
    result = bench_loader.run(
        [f"data.path={fer_csv}", f"paths.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", "model=simple_cnn",
         "aug=heavy", "data.batch_size=8", "--batches", "3", "--warmup", "1", "--steps", "1"]
    )  # fmt: skip
    assert result["loader"] > 0
    assert result["device_loader"] > 0
    assert result["model_step"] > 0


def test_without_the_data_it_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "fer2013.csv"
    with pytest.raises(SystemExit) as stop:
        bench_loader.main(["aug=heavy", f"data.path={missing}", "--batches", "1"])
    assert stop.value.code == 2
    assert f"error: FER2013 data not found at {missing}" in capsys.readouterr().err

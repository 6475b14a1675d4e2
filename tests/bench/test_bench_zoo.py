"""The zoo's speed record: every model timed in each of the autotune's settings, the fastest named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.bench.zoo import main
from fer_lightning.models.table import markdown_table

pytestmark = pytest.mark.usefixtures("one_thread")


def test_zoo_speed_record_names_each_models_fastest_setting(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    main(["--out", str(out), "--models", "tiny_xception", "resnet20", "--steps", "1", "--warmup", "0"])
    record = json.loads(out.read_text())
    assert set(record["models"]) == {"tiny_xception", "resnet20"}
    for measured in record["models"].values():
        rates = measured["images_per_s"]
        assert "fp32 NCHW" in rates
        assert all(rate > 0 for rate in rates.values())
        assert rates[measured["best"]] == max(rates.values())
    assert record["batch_size"] == 64
    assert record["torch"]
    assert record["machine"]
    table = markdown_table(["tiny_xception", "resnet20", "simple_cnn"], speeds=record)
    lines = table.strip().splitlines()
    assert "training img/s (batch 64)" in lines[0]
    assert lines[1].count("|") == lines[0].count("|")
    best = record["models"]["resnet20"]["best"]
    rate = record["models"]["resnet20"]["images_per_s"][best]
    assert any(line.startswith("| `resnet20` |") and line.endswith(f" {rate:,.0f} | {best} |") for line in lines)
    assert any(line.startswith("| `simple_cnn` |") and line.endswith(" — | — |") for line in lines)  # not measured


def test_an_unknown_model_is_refused_naming_the_registered_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "speed.json"), "--models", "resnet19"])
    assert "unknown models ['resnet19']" in capsys.readouterr().err
    assert not (tmp_path / "speed.json").exists()


def test_update_remeasures_only_the_named_models(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    quick = ["--steps", "1", "--warmup", "0"]
    main(["--out", str(out), "--models", "tiny_xception", "resnet20", *quick])
    first = json.loads(out.read_text())
    main(["--out", str(out), "--models", "resnet20", "--update", *quick])
    second = json.loads(out.read_text())
    assert second["models"]["tiny_xception"] == first["models"]["tiny_xception"]
    assert set(second["models"]) == {"tiny_xception", "resnet20"}
    assert "updated" in second
    with pytest.raises(SystemExit, match=r"differs from the file's in \['steps'\]"):
        main(["--out", str(out), "--models", "resnet20", "--update", "--steps", "2", "--warmup", "0"])

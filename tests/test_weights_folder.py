"""weights/: every shipped file is what weights.json says (sha256, size under 5 MB, loads as a model), README names
it; the slow check re-runs each file's eval command on the real FER2013 (FER+ votes for a FER+ model, its
`eval_overrides`) and gets its recorded accuracies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.checkpoint import load_module
from fer_lightning.data.formats.fer2013 import FER2013_CLASSES
from fer_lightning.data.formats.ferplus import FERPLUS_CLASSES
from fer_lightning.evaluation import run_eval
from fer_lightning.tools.weights import sha256
from tests.conftest import REAL_FER2013, compose_train

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
ENTRIES = json.loads((WEIGHTS / "weights.json").read_text())
IDS = [entry["file"] for entry in ENTRIES]
VOTES_PLACEHOLDER = "<fer2013new.csv>"


def is_ferplus(entry: dict) -> bool:
    return "data=ferplus" in entry.get("eval_overrides", [])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_shipped_file_matches_its_record(entry: dict) -> None:
    path = WEIGHTS / entry["file"]
    assert path.stat().st_size < 5e6
    assert sha256(path) == entry["sha256"]
    assert entry["sha256"] in (WEIGHTS / "README.md").read_text()
    module = load_module(path)
    assert module.hparams.model_config["name"] == entry["model"]
    assert module.class_names == list(FERPLUS_CLASSES if is_ferplus(entry) else FER2013_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_eval_reproduces_the_recorded_accuracy(entry: dict, real_fer2013: Path, tmp_path: Path) -> None:
    overrides = [f"ckpt_path={WEIGHTS / entry['file']}", f"data.path={real_fer2013}", "split=both"]
    overrides += [f"data.cache_dir={tmp_path / 'cache'}"]
    if is_ferplus(entry):
        votes = REAL_FER2013 / "fer2013new.csv"
        if not votes.exists():
            pytest.skip(f"FER+ votes not found at {votes}")
        overrides += [o.replace(VOTES_PLACEHOLDER, str(votes)) for o in entry["eval_overrides"]]
    metrics = run_eval(compose_train(overrides, tmp_path, config_name="eval"))
    assert metrics["val/acc"] == pytest.approx(entry["public_test"], abs=1e-4)
    assert metrics["test/acc"] == pytest.approx(entry["private_test"], abs=1e-4)

"""calibration.py: temperature scaling fitted by NLL, the ECE (torchmetrics) and reliability bins, and the calibrated
checkpoint eval writes (eval's end-to-end runs: tests/test_evaluation.py; predict and export apply T: their tests)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_lightning.calibration import (
    CalibrationError,
    check_temperature,
    checkpoint_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    plot_reliability,
    reliability_bins,
    write_calibrated_checkpoint,
)
from fer_lightning.checkpoint import build_checkpoint, load_module, save_checkpoint
from fer_lightning.models import create_model

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def sampled(n: int = 20000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from softmax(logits): these logits are calibrated by construction (T = 1)."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, 7, generator=generator, dtype=torch.float64)
    return logits, torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def test_fitting_recovers_a_known_temperature_and_lowers_the_nll() -> None:
    logits, targets = sampled()
    overconfident = logits * 3  # a model 3x too sure of itself: T = 3 undoes it
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.03)
    assert nll(overconfident, targets, temperature) < nll(overconfident, targets) - 0.5
    assert fit_temperature(logits / 2, targets) == pytest.approx(0.5, rel=0.03)  # under-confident: T < 1
    calibrated = torch.softmax(overconfident / temperature, -1)
    assert torch.equal(calibrated.argmax(-1), overconfident.argmax(-1))  # accuracy unchanged
    before = expected_calibration_error(torch.softmax(overconfident, -1), targets)
    assert expected_calibration_error(calibrated, targets) < 0.02 < 0.1 < before


def test_the_fitted_temperature_is_the_nll_minimum() -> None:
    logits, targets = sampled(3000, seed=1)
    temperature = fit_temperature(logits * 1.7 + 0.3, targets)
    best = nll(logits * 1.7 + 0.3, targets, temperature)
    for factor in (0.999, 1.001, 0.99, 1.01):  # no neighbour is lower: exact to well under 0.1 %
        assert nll(logits * 1.7 + 0.3, targets, temperature * factor) >= best


def test_soft_labels_are_fitted_by_their_cross_entropy() -> None:
    logits, targets = sampled(5000, seed=2)
    soft = torch.nn.functional.one_hot(targets, 7).double()
    assert nll(logits, soft, 1.3) == pytest.approx(nll(logits, targets, 1.3))
    assert fit_temperature(logits * 2, soft) == pytest.approx(fit_temperature(logits * 2, targets))


def test_ece_equals_a_hand_computed_value() -> None:
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # confidence 0.90, bin 13 of 15 ([0.867, 0.933)), correct
            [0.88, 0.06, 0.06],  # 0.88, bin 13, correct: the bin's accuracy 1, mean confidence 0.89
            [0.85, 0.10, 0.05],  # 0.85, bin 12, wrong
            [0.20, 0.50, 0.30],  # 0.50, bin 7, correct
            [0.29, 0.29, 0.42],  # 0.42, bin 6, wrong
        ]
    )
    targets = torch.tensor([0, 0, 1, 1, 0])
    expected = (2 * abs(1 - 0.89) + abs(0 - 0.85) + abs(1 - 0.50) + abs(0 - 0.42)) / 5  # 0.398
    assert expected_calibration_error(probs, targets) == pytest.approx(expected, abs=1e-6)
    bins = reliability_bins(probs, targets)
    assert bins["count"].tolist() == [0] * 6 + [1, 1, 0, 0, 0, 0, 1, 2, 0]
    assert bins["confidence"][13] == pytest.approx(0.89)
    assert bins["accuracy"][[6, 7, 12, 13]].tolist() == [0, 1, 0, 1]


def test_the_reliability_bins_give_torchmetrics_ece() -> None:
    logits, targets = sampled(4000, seed=3)
    probs = torch.softmax(logits * 2, -1)
    bins = reliability_bins(probs, targets)
    ece = float(np.sum(bins["count"] / bins["count"].sum() * np.abs(bins["accuracy"] - bins["confidence"])))
    assert ece == pytest.approx(expected_calibration_error(probs, targets), abs=1e-6)  # torchmetrics: float32


def test_the_reliability_diagram_is_written(tmp_path: Path) -> None:
    logits, targets = sampled(500, seed=4)
    panels = [("before", torch.softmax(logits * 3, -1)), ("after", torch.softmax(logits, -1))]
    path = plot_reliability(panels, targets, tmp_path / "plots" / "reliability_val.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value", [0, -1.5, 0.0, math.nan, math.inf, -math.inf, "2", True, None])
def test_a_temperature_must_be_a_finite_number_above_zero(value: object) -> None:
    with pytest.raises(CalibrationError, match="a temperature must be a finite number > 0"):
        check_temperature(value)


def test_a_checkpoint_without_a_temperature_has_one_and_a_bad_one_is_refused() -> None:
    assert checkpoint_temperature({}) == checkpoint_temperature(None) == checkpoint_temperature({"temperature": None})
    assert checkpoint_temperature({"temperature": 2}) == 2.0
    with pytest.raises(CalibrationError, match=r"m.ckpt: preprocessing.temperature=-1.0"):
        checkpoint_temperature({"temperature": -1.0}, "m.ckpt")


def test_no_temperature_is_fitted_on_broken_logits() -> None:
    logits, targets = sampled(10)
    logits[3, 2] = math.nan
    with pytest.raises(CalibrationError, match="NaN or inf"):
        fit_temperature(logits, targets)
    with pytest.raises(CalibrationError, match="N >= 1 images"):
        fit_temperature(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))


def small_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    config = {"name": "tiny_xception", "num_classes": 7, "in_chans": 1}
    preprocessing = {"image_size": 48, "crop_size": None, "in_chans": 1, "mean": 0.5, "std": 0.5}
    return save_checkpoint(
        build_checkpoint(create_model(**config), config, preprocessing | {"class_names": CLASSES}), path
    )


def test_the_calibrated_checkpoint_is_a_new_file_that_loads_with_its_temperature(tmp_path: Path) -> None:
    source = small_checkpoint(tmp_path / "model.ckpt")
    original = source.read_bytes()
    path = write_calibrated_checkpoint(source, 1.75, {"split": "val"})
    assert path == tmp_path / "model.calibrated.ckpt"
    assert source.read_bytes() == original  # the user's checkpoint is never touched
    module = load_module(path)
    assert module.hparams["preprocessing"]["temperature"] == 1.75
    assert checkpoint_temperature(module.hparams["preprocessing"]) == 1.75
    assert torch.load(path, weights_only=True)["calibration"] == {"split": "val"}
    reference = load_module(source).state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in module.state_dict().items())
    assert not list(tmp_path.glob(".*partial"))


def test_the_calibrated_checkpoint_never_overwrites_its_source(tmp_path: Path) -> None:
    source = small_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(CalibrationError, match="would overwrite the checkpoint evaluated"):
        write_calibrated_checkpoint(source, 2.0, {}, output=tmp_path / "." / "model.ckpt")
    with pytest.raises(CalibrationError, match="a temperature must be"):
        write_calibrated_checkpoint(source, 0.0, {})
    assert not (tmp_path / "model.calibrated.ckpt").exists()

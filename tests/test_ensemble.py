"""eval.py with ckpt_path=[a,b]: the mean of the members' softmax probabilities, each member fed as it was trained.

Untrained tiny models keep it fast: what is under test is that the ensemble's numbers are exactly those computed by
hand from the members' own preprocessing, not how good the models are.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_lightning.calibration import expected_calibration_error
from fer_lightning.checkpoint import CheckpointError, build_checkpoint, load_module, save_checkpoint
from fer_lightning.ensemble import MemberProbabilities, check_same_labels
from fer_lightning.evaluation import run_eval
from fer_lightning.models import create_model
from tests.conftest import compose_train, write_fer_csv, write_image_folder
from tests.scripts import run_script

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
USAGE = {"val": "PublicTest", "test": "PrivateTest"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: these batches are tiny, and on a shared 2-core machine a second thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    counts = {"Training": 14, "PublicTest": 14, "PrivateTest": 21}
    return write_fer_csv(tmp_path_factory.mktemp("data") / "fer.csv", counts)


def spread_logits(net: torch.nn.Module, preprocessing: dict) -> None:
    """An untrained net predicts one class for every noise image (the classifier bias dominates): centre its logits
    on such images and scale them to unit spread, so predictions vary per image and the members disagree."""
    size, chans = preprocessing["crop_size"] or preprocessing["image_size"], preprocessing["in_chans"]
    images = torch.randint(0, 256, (256, chans, size, size)) / 255.0
    with torch.no_grad():
        logits = net.eval()((images - preprocessing["mean"]) / preprocessing["std"]) - net.fc.bias
        scale = 1.0 / logits.std(0).mean()
        net.fc.weight.mul_(scale)
        net.fc.bias.copy_(-scale * logits.mean(0))


def checkpoint(path: Path, seed: int, image_size: int = 48, crop_size: int | None = None, **extra) -> Path:
    """An untrained tiny_xception whose predictions vary from image to image (see spread_logits)."""
    torch.manual_seed(seed)
    in_chans, classes = extra.get("in_chans", 1), extra.get("class_names", CLASSES)
    config = {"name": "tiny_xception", "num_classes": len(classes), "in_chans": in_chans}
    preprocessing = {"image_size": image_size, "crop_size": crop_size, "in_chans": in_chans, "mean": 0.5, "std": 0.5}
    preprocessing |= {k: v for k, v in extra.items() if k in ("mean", "std")} | {"class_names": list(classes)}
    net = create_model(**config)
    spread_logits(net, preprocessing)
    return save_checkpoint(build_checkpoint(net, config, preprocessing), path)


def eval_cfg(root: Path, data: Path, *overrides: str):
    base = ["trainer.accelerator=cpu", "data.num_workers=0", f"data.path={data}"]
    return compose_train([*base, *overrides], root, config_name="eval")


def ensemble_of(*paths: Path) -> str:
    return f"ckpt_path=[{','.join(map(str, paths))}]"


def read_split(data: Path, usage: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's uint8 images and labels, straight from the CSV (not through the datamodule)."""
    with data.open() as file:
        rows = [row for row in csv.DictReader(file) if row["Usage"] == usage]
    images = np.stack([np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48) for row in rows])
    return images, np.array([int(row["emotion"]) for row in rows])


def hand_probs(ckpt: Path, images: np.ndarray, flip: bool = False) -> torch.Tensor:
    """A member's probabilities with its own preprocessing: resize, center crop, channels, (flip views), softmax."""
    module = load_module(ckpt)
    prep = module.hparams["preprocessing"]
    size, crop = prep["image_size"], prep["crop_size"]
    if size != 48:
        images = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) for image in images])
    batch = torch.from_numpy(images).unsqueeze(1).expand(-1, prep["in_chans"], -1, -1)
    if crop:
        top = (size - crop) // 2
        batch = batch[..., top : top + crop, top : top + crop]
    if flip:
        batch = torch.stack([batch, batch.flip(-1)], dim=1)  # (N, 2 views, C, H, W): the module averages logits
    with torch.no_grad():
        return module(batch.contiguous()).softmax(-1)


def accuracy(probs: torch.Tensor, labels: np.ndarray) -> float:
    return float((probs.argmax(-1).numpy() == labels).mean())


def nll(probs: torch.Tensor, labels: np.ndarray) -> float:
    """Cross-entropy of the predictive distribution: a continuous check beside the coarse accuracy (k / 21)."""
    return float(-probs[torch.arange(len(labels)), torch.from_numpy(labels)].log().mean())


def test_an_ensemble_of_one_checkpoint_with_itself_is_that_checkpoint(data: Path, tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "a.ckpt", seed=0)
    single = run_eval(eval_cfg(tmp_path / "single", data, f"ckpt_path={ckpt}"))
    cfg = eval_cfg(tmp_path / "ensemble", data, ensemble_of(ckpt, ckpt))
    ensemble = run_eval(cfg)
    for split in ("val", "test"):
        for key in ("acc", "f1_macro"):
            assert ensemble[f"{split}/{key}"] == pytest.approx(single[f"{split}/{key}"], abs=1e-6), key
        assert ensemble[f"{split}/loss"] == pytest.approx(single[f"{split}/loss"], rel=1e-5)
        assert ensemble[f"{split}/per_class_acc"] == pytest.approx(single[f"{split}/per_class_acc"])
        for member in ensemble["members"]:
            assert member[f"{split}/acc"] == pytest.approx(single[f"{split}/acc"], abs=1e-6)
    single_report, ensemble_report = (
        json.loads((tmp_path / run / "run" / "per_class_test.json").read_text()) for run in ("single", "ensemble")
    )
    assert ensemble_report["confusion_matrix"] == single_report["confusion_matrix"]


def test_ensemble_accuracy_is_that_of_the_averaged_member_probabilities(data: Path, tmp_path: Path) -> None:
    a = checkpoint(tmp_path / "a.ckpt", seed=0)
    b = checkpoint(tmp_path / "b.ckpt", seed=1, mean=0.4, std=0.3)
    metrics = run_eval(eval_cfg(tmp_path, data, ensemble_of(a, b)))
    for split, usage in USAGE.items():
        images, labels = read_split(data, usage)
        probs = [hand_probs(ckpt, images) for ckpt in (a, b)]
        assert not torch.allclose(probs[0], probs[1])
        assert metrics[f"{split}/acc"] == pytest.approx(accuracy((probs[0] + probs[1]) / 2, labels), abs=1e-6)
        assert metrics[f"{split}/loss"] == pytest.approx(nll((probs[0] + probs[1]) / 2, labels), rel=1e-5)
        mean, targets = (probs[0] + probs[1]) / 2, torch.from_numpy(labels)
        assert metrics[f"{split}/ece"] == pytest.approx(expected_calibration_error(mean, targets), abs=1e-5)
        for member, member_probs in zip(metrics["members"], probs, strict=True):
            assert member[f"{split}/acc"] == pytest.approx(accuracy(member_probs, labels), abs=1e-6)
            ece = expected_calibration_error(member_probs, targets)
            assert member[f"{split}/ece"] == pytest.approx(ece, abs=1e-5)
        assert (tmp_path / "run" / f"reliability_{split}.png").stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["ckpt_path"] for m in saved["members"]] == [str(a), str(b)]
    assert saved["members"][1]["preprocessing"] | {} == {
        "image_size": 48, "crop_size": None, "in_chans": 1, "mean": 0.4, "std": 0.3
    }  # fmt: skip
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    confmat = np.array(json.loads((tmp_path / "run" / "per_class_test.json").read_text())["confusion_matrix"])
    assert confmat.sum() == 21
    assert np.trace(confmat) / 21 == pytest.approx(saved["test/acc"])


def test_members_with_other_sizes_crops_and_channels_each_get_their_own_views(data: Path, tmp_path: Path) -> None:
    members = [
        checkpoint(tmp_path / "48.ckpt", seed=0),
        checkpoint(tmp_path / "64.ckpt", seed=1, image_size=64, mean=0.45, std=0.25),
        checkpoint(tmp_path / "crop40.ckpt", seed=2, crop_size=40),
        checkpoint(tmp_path / "rgb.ckpt", seed=3, in_chans=3),
    ]
    metrics = run_eval(eval_cfg(tmp_path, data, ensemble_of(*members), "tta=flip", "split=test"))
    images, labels = read_split(data, USAGE["test"])
    probs = [hand_probs(ckpt, images, flip=True) for ckpt in members]
    assert metrics["test/acc"] == pytest.approx(accuracy(torch.stack(probs).mean(0), labels), abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(nll(torch.stack(probs).mean(0), labels), rel=1e-5)
    for member, member_probs in zip(metrics["members"], probs, strict=True):
        assert member["test/acc"] == pytest.approx(accuracy(member_probs, labels), abs=1e-6)
        assert member["test/loss"] == pytest.approx(nll(member_probs, labels), rel=1e-5)
    assert [(m["preprocessing"]["image_size"], m["preprocessing"]["crop_size"]) for m in metrics["members"]] == [
        (48, None), (64, None), (48, 40), (48, None)
    ]  # fmt: skip
    assert metrics["tta"].endswith("FlipTTA")
    assert not [key for key in metrics if key.startswith("val/")]


def test_a_bad_member_is_named(data: Path, tmp_path: Path) -> None:
    good = checkpoint(tmp_path / "good.ckpt", seed=0)
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing\.ckpt"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(good, tmp_path / "missing.ckpt")))
    torch.save({"a": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match=r"plain\.ckpt: not a fer-lightning checkpoint"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(good, tmp_path / "plain.ckpt")))


def test_members_predicting_other_classes_are_refused_naming_both(data: Path, tmp_path: Path) -> None:
    seven = checkpoint(tmp_path / "seven.ckpt", seed=0)
    eight = checkpoint(tmp_path / "eight.ckpt", seed=0, class_names=[*CLASSES, "contempt"])
    with pytest.raises(ValueError, match=r"seven\.ckpt predicts 7 .* but .*eight\.ckpt predicts 8"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(seven, eight)))
    renamed = checkpoint(tmp_path / "renamed.ckpt", seed=0, class_names=["a", "b", "c", "d", "e", "f", "g"])
    with pytest.raises(ValueError, match=r"same classes: .*seven\.ckpt .* but .*renamed\.ckpt predicts 7 \['a'"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(seven, renamed)))


def test_members_evaluate_an_image_folder_in_their_class_order(tmp_path: Path) -> None:
    """The folder's classes are sorted (neutral before sad): each member's data is relabelled to its order."""
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 7, "PublicTest": 7, "PrivateTest": 21})
    folder = write_image_folder(data, tmp_path / "folder")
    members = ensemble_of(checkpoint(tmp_path / "a.ckpt", seed=0), checkpoint(tmp_path / "b.ckpt", seed=1))
    on_csv = run_eval(eval_cfg(tmp_path / "csv", data, members, "split=test"))
    on_folder = run_eval(eval_cfg(tmp_path / "on_folder", folder, members, "split=test", "data=image_folder"))
    for key in ("test/acc", "test/f1_macro", "test/loss"):
        assert on_folder[key] == pytest.approx(on_csv[key], abs=1e-5), key
    assert on_folder["test/per_class_acc"] == pytest.approx(on_csv["test/per_class_acc"])
    for in_folder, in_csv in zip(on_folder["members"], on_csv["members"], strict=True):
        assert in_folder["test/loss"] == pytest.approx(in_csv["test/loss"], abs=1e-5)
    renamed = ["angry", "disgust", "fear", "happy", "sad", "surprise", "calm"]
    other = checkpoint(tmp_path / "c.ckpt", seed=2, class_names=renamed)  # members must agree: both renamed
    other = ensemble_of(other, other)
    with pytest.raises(CheckpointError, match=r"c\.ckpt predicts the classes \[.*'calm'\] but data .* \[.*'neutral'"):
        run_eval(eval_cfg(tmp_path / "other", folder, other, "split=test", "data=image_folder"))


def test_members_whose_labels_differ_are_refused() -> None:
    labels = torch.tensor([0, 1, 2])
    check_same_labels(("a.ckpt", labels), "b.ckpt", labels.clone(), "test")
    with pytest.raises(ValueError, match=r"test labels seen by b\.ckpt .* differ from those seen by a\.ckpt"):
        check_same_labels(("a.ckpt", labels), "b.ckpt", torch.tensor([0, 2, 1]), "test")
    with pytest.raises(ValueError, match=r"b\.ckpt \(2 images\) differ .* a\.ckpt \(3 images\)"):
        check_same_labels(("a.ckpt", labels), "b.ckpt", labels[:2], "test")


def test_an_ensemble_under_ddp_is_refused(data: Path, tmp_path: Path) -> None:
    a = checkpoint(tmp_path / "a.ckpt", seed=0)
    with pytest.raises(ValueError, match="one process on one device.*trainer.devices=1"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(a, a), "trainer.devices=2"))


def test_eval_script_with_a_list_of_checkpoints(data: Path, tmp_path: Path) -> None:
    a, b = checkpoint(tmp_path / "a.ckpt", seed=0), checkpoint(tmp_path / "b.ckpt", seed=1, image_size=64)
    out = tmp_path / "eval"
    overrides = [f"data.path={data}", "split=test", "data.num_workers=0", "trainer.accelerator=cpu"]
    result = run_script("eval.py", ensemble_of(a, b), *overrides, f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == [str(a), str(b)]
    assert [m["ckpt_path"] for m in metrics["members"]] == [str(a), str(b)]
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert set(metrics["test/per_class_acc"]) == set(CLASSES)
    for name in ("confusion_matrix_test.png", "per_class_test.md"):
        assert (out / name).stat().st_size > 0
    table = result.stdout[result.stdout.index("model  ") :]
    for row in ("member 1", "member 2", "64px", "ensemble"):
        assert row in table


def test_best_val_selection_reports_on_test_the_subset_best_on_val(data: Path, tmp_path: Path) -> None:
    paths = [checkpoint(tmp_path / f"{name}.ckpt", seed=seed) for seed, name in enumerate("abc")]
    metrics = run_eval(eval_cfg(tmp_path, data, ensemble_of(*paths), "ensemble_select=best_val"))
    by_split = {}
    for split, usage in USAGE.items():
        images, labels = read_split(data, usage)
        by_split[split] = ([hand_probs(path, images) for path in paths], labels)
    subsets = [list(c) for size in (1, 2, 3) for c in itertools.combinations(range(3), size)]

    def subset_acc(split: str, subset: list[int]) -> float:
        probs, labels = by_split[split]
        return accuracy(torch.stack([probs[i] for i in subset]).mean(0), labels)

    best_val = max(subset_acc("val", subset) for subset in subsets)
    # the chosen subset: best on val, then fewest members, then earliest (combinations come in that order)
    chosen = next(subset for subset in subsets if subset_acc("val", subset) == pytest.approx(best_val, abs=1e-6))
    assert metrics["selection"]["chosen"] == [str(paths[i]) for i in chosen]
    assert [m["in_ensemble"] for m in metrics["members"]] == [i in chosen for i in range(3)]
    assert metrics["val/acc"] == pytest.approx(best_val, abs=1e-6)
    assert metrics["test/acc"] == pytest.approx(subset_acc("test", chosen), abs=1e-6)
    report = (tmp_path / "run" / "ensemble_subsets.md").read_text()
    assert report.count("\n| ") == 2 + 3 + 7  # a header per table, the best of each size, every subset


def test_best_val_selection_needs_both_splits(data: Path, tmp_path: Path) -> None:
    a = checkpoint(tmp_path / "a.ckpt", seed=0)
    with pytest.raises(ValueError, match="needs split=both, got split=test"):
        run_eval(eval_cfg(tmp_path, data, ensemble_of(a, a), "ensemble_select=best_val", "split=test"))


def test_best_val_selection_of_one_checkpoint_is_refused(data: Path, tmp_path: Path) -> None:
    a = checkpoint(tmp_path / "a.ckpt", seed=0)
    with pytest.raises(ValueError, match=r"ensemble_select=best_val chooses among an ensemble's members"):
        run_eval(eval_cfg(tmp_path, data, f"ckpt_path={a}", "ensemble_select=best_val"))


def test_a_member_contributes_its_probabilities_at_its_stored_temperature() -> None:
    """A member calibrated by `eval.py calibrate=true` enters the mean as predict and export use it."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])

    class FixedLogits(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return logits

    batch = (torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    probabilities, targets = MemberProbabilities(FixedLogits(), temperature=2.0).predict_step(batch, 0)
    torch.testing.assert_close(probabilities, (logits / 2.0).softmax(-1))
    assert torch.equal(targets, batch[1])
    uncalibrated, _ = MemberProbabilities(FixedLogits()).predict_step(batch, 0)
    torch.testing.assert_close(uncalibrated, logits.softmax(-1))

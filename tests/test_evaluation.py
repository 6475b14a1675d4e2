"""eval.py: any checkpoint on configured data, the same metrics.json and reports as training writes."""

from __future__ import annotations

import json
import logging
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from fer_lightning.checkpoint import CheckpointError
from fer_lightning.errors import UserError
from fer_lightning.evaluation import run_eval
from fer_lightning.training import run_training
from tests.conftest import FER2013_ORDER, compose_train, write_fer_csv, write_image_folder
from tests.scripts import run_script
from tests.test_checkpoint import package_paths
from tests.test_ensemble import checkpoint

REPORTS = ("confusion_matrix_{}.png", "per_class_{}.md", "per_class_{}.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A short training run; its metrics.json and best checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    data = write_fer_csv(root / "fer.csv", {"Training": 40, "PublicTest": 14, "PrivateTest": 14})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = compose_train([f"data.path={data}", "model=tiny_xception", "debug=limit", "data.batch_size=8"], root)
    run_training(cfg)
    torch.set_num_threads(threads)
    return {"data": data, **json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())}


def eval_cfg(tmp_path: Path, *overrides: str):
    return compose_train(["trainer.accelerator=cpu", "data.num_workers=0", *overrides], tmp_path, config_name="eval")


def test_eval_reproduces_the_training_metrics_and_reports(trained: dict, tmp_path: Path) -> None:
    cfg = eval_cfg(tmp_path, f"data.path={trained['data']}", f"ckpt_path={trained['best_checkpoint']}")
    metrics = run_eval(cfg)
    out = Path(cfg.paths.output_dir)
    for key in ("val/acc", "val/loss", "val/f1_macro", "test/acc", "test/loss", "test/f1_macro"):
        # losses to 1e-4: the run trained and validated in bf16 (precision auto on this CPU), and eval evaluates in
        # the checkpoint's precision, where oneDNN's bf16 kernels round differently with another thread count
        assert metrics[key] == pytest.approx(trained[key], abs=1e-4 if "loss" in key else 1e-6), key
    assert metrics["test/per_class_acc"] == pytest.approx(trained["test/per_class_acc"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["checkpoint"] == trained["best_checkpoint"]
    assert saved["val/acc"] == pytest.approx(metrics["val/acc"])
    for split in ("val", "test"):
        for name in REPORTS:
            assert (out / name.format(split)).stat().st_size > 0
    assert sum(map(sum, json.loads((out / "per_class_test.json").read_text())["confusion_matrix"])) == 14
    assert "ckpt_path:" in (out / "config_resolved.yaml").read_text()


def test_eval_script_with_tencrop_on_the_val_split(trained: dict, tmp_path: Path) -> None:
    result = run_script(
        "eval.py",
        f"ckpt_path={trained['best_checkpoint']}",
        f"data.path={trained['data']}",
        "tta=tencrop",
        "split=val",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path}/eval",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tta"].endswith("TenCropTTA")
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert not [key for key in metrics if key.startswith("test/")]
    assert (tmp_path / "eval" / "per_class_val.md").exists()
    assert not (tmp_path / "eval" / "per_class_test.md").exists()


def test_eval_names_a_checkpoint_that_is_not_ours(trained: dict, tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "plain.ckpt")
    cfg = eval_cfg(tmp_path, f"data.path={trained['data']}", f"ckpt_path={tmp_path / 'plain.ckpt'}")
    with pytest.raises(CheckpointError, match="plain.ckpt: not a fer-lightning checkpoint"):
        run_eval(cfg)


def test_eval_refuses_data_with_another_class_count(trained: dict, tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "ferplus.csv", {"Training": 8, "PublicTest": 8, "PrivateTest": 8}, num_classes=8)
    eight = ["data.num_classes=8", "data.class_names=[a,b,c,d,e,f,g,h]"]
    cfg = eval_cfg(tmp_path, f"data.path={data}", *eight, f"ckpt_path={trained['best_checkpoint']}")
    with pytest.raises(ValueError, match=r"\.ckpt predicts 7 classes but data .*ferplus.csv has 8"):
        run_eval(cfg)


def test_a_trained_checkpoint_names_no_module_of_the_package(trained: dict) -> None:
    """What makes checkpoints survive modules moving (tests/test_checkpoint.py loads a pre-move one)."""
    checkpoint = torch.load(trained["best_checkpoint"], map_location="cpu", weights_only=True)
    assert package_paths({k: v for k, v in checkpoint.items() if k != "state_dict"}) == []


def test_fer_eval_console_script_is_eval_main() -> None:
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "fer-eval"]
    assert script.value == "fer_lightning.cli:eval_main"


@pytest.fixture(scope="module")
def same_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One set of images as a FER2013 CSV and as an image folder named with FER's 7 classes (sorted: another order)."""
    root = tmp_path_factory.mktemp("same_images")
    data = write_fer_csv(root / "fer.csv", {"Training": 7, "PublicTest": 14, "PrivateTest": 21})
    return {"csv": data, "folder": write_image_folder(data, root / "folder")}


def test_an_image_folder_is_evaluated_in_the_checkpoints_class_order(
    same_images: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = checkpoint(tmp_path / "fer2013_order.ckpt", seed=0)  # an untrained model whose predictions vary
    assert load_class_names(ckpt) == list(FER2013_ORDER)
    on_csv = run_eval(eval_cfg(tmp_path / "csv", f"data.path={same_images['csv']}", f"ckpt_path={ckpt}"))
    folder = ["data=image_folder", f"data.path={same_images['folder']}", f"ckpt_path={ckpt}"]
    with caplog.at_level(logging.WARNING, logger="fer_lightning.checkpoint"):
        on_folder = run_eval(eval_cfg(tmp_path / "folder", *folder))
    assert "remapped by class name to the checkpoint's order" in caplog.text
    for split in ("val", "test"):
        for key in ("acc", "f1_macro", "loss"):
            assert on_folder[f"{split}/{key}"] == pytest.approx(on_csv[f"{split}/{key}"], abs=1e-5), (split, key)
        assert on_folder[f"{split}/per_class_acc"] == pytest.approx(on_csv[f"{split}/per_class_acc"])
    report = json.loads((tmp_path / "folder" / "run" / "per_class_test.json").read_text())
    assert report == json.loads((tmp_path / "csv" / "run" / "per_class_test.json").read_text())


def test_an_image_folder_of_other_class_names_is_refused_naming_both(
    same_images: dict[str, Path], tmp_path: Path
) -> None:
    renamed = shutil.copytree(same_images["folder"], tmp_path / "renamed")
    for split in ("train", "val", "test"):
        (renamed / split / "neutral").rename(renamed / split / "calm")
    ckpt = checkpoint(tmp_path / "fer2013_order.ckpt", seed=0)
    cfg = eval_cfg(tmp_path, "data=image_folder", f"data.path={renamed}", f"ckpt_path={ckpt}")
    expected = r"predicts the classes \['angry', .*'neutral'\] but data .*renamed has the classes \['angry', 'calm'"
    with pytest.raises(CheckpointError, match=expected):
        run_eval(cfg)


def load_class_names(ckpt: Path) -> list[str]:
    return torch.load(ckpt, weights_only=True)["hyper_parameters"]["class_names"]


SYNTHETIC = [
    "data=synthetic",
    "+data.synthetic.num_train=70",
    "+data.synthetic.num_val=42",
    "+data.synthetic.num_test=42",
]


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The embedded synthetic data, small, and an untrained model made 4x too sure of its varied predictions."""
    root = tmp_path_factory.mktemp("calibrate")
    ckpt = checkpoint(root / "model.ckpt", seed=1)
    saved = torch.load(ckpt, weights_only=True)
    for key in ("net.fc.weight", "net.fc.bias"):
        saved["state_dict"][key] *= 4.0
    torch.save(saved, ckpt)
    return {"ckpt": ckpt, "data": root / "synthetic.csv"}


def test_calibrate_writes_a_calibrated_checkpoint_reliability_diagrams_and_ece(
    overconfident: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt, original = overconfident["ckpt"], overconfident["ckpt"].read_bytes()
    cfg = eval_cfg(tmp_path, *SYNTHETIC, f"data.path={overconfident['data']}", f"ckpt_path={ckpt}", "calibrate=true")
    with caplog.at_level(logging.INFO):
        metrics = run_eval(cfg)
    assert "normalisation from the checkpoint: mean 0.5000, std 0.5000" in caplog.text
    assert "normalisation from the train split" not in caplog.text  # the model normalises with the checkpoint's
    calibrated = ckpt.with_name("model.calibrated.ckpt")
    assert metrics["calibrated_checkpoint"] == str(calibrated)
    assert ckpt.read_bytes() == original
    temperature = metrics["calibrated_temperature"]
    assert torch.load(calibrated, weights_only=True)["hyper_parameters"]["preprocessing"]["temperature"] == temperature
    assert temperature > 1.5
    assert metrics["temperature"] == 1.0
    for split in ("val", "test"):
        assert (Path(cfg.paths.output_dir) / f"reliability_{split}.png").stat().st_size > 0
        assert 0 <= metrics[f"{split}/ece_calibrated"] <= 1
        assert 0 <= metrics[f"{split}/ece"] <= 1
    assert metrics["val/nll_calibrated"] < metrics["val/nll"]  # fitted on val: its NLL can only fall
    assert metrics["val/ece_calibrated"] < metrics["val/ece"]
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["test/ece_calibrated"] == pytest.approx(metrics["test/ece_calibrated"])

    # the calibrated checkpoint evaluates like any: the same accuracy, its stored T applied to the ECE
    again = run_eval(eval_cfg(tmp_path / "again", *SYNTHETIC, f"data.path={overconfident['data']}",
                              f"ckpt_path={calibrated}"))  # fmt: skip
    assert again["temperature"] == temperature
    assert "calibrated_checkpoint" not in again
    for split in ("val", "test"):
        assert again[f"{split}/acc"] == metrics[f"{split}/acc"]
        assert again[f"{split}/f1_macro"] == metrics[f"{split}/f1_macro"]
        assert again[f"{split}/ece"] == pytest.approx(metrics[f"{split}/ece_calibrated"], abs=1e-6)


def test_eval_script_calibrates_and_reports_ece_before_and_after(
    overconfident: dict[str, Path], tmp_path: Path
) -> None:
    result = run_script(
        "eval.py", *SYNTHETIC, f"data.path={overconfident['data']}", f"ckpt_path={overconfident['ckpt']}",
        "calibrate=true", f"calibrated_ckpt_path={tmp_path / 'out' / 'cal.ckpt'}", "split=test",
        "data.num_workers=0", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fitted on val (42 images); val/ece " in result.stdout
    assert ", test/ece " in result.stdout
    assert f"Calibrated checkpoint (T stored in its preprocessing): {tmp_path / 'out' / 'cal.ckpt'}" in result.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"val/ece", "val/ece_calibrated", "test/ece", "test/ece_calibrated"} <= set(metrics)  # val: to fit on
    assert (tmp_path / "out" / "cal.ckpt").is_file()


def test_calibrate_refuses_an_ensemble_and_a_non_boolean(overconfident: dict[str, Path], tmp_path: Path) -> None:
    ckpt = overconfident["ckpt"]
    ensemble = eval_cfg(tmp_path, *SYNTHETIC, f"ckpt_path=[{ckpt},{ckpt}]", "calibrate=true")
    with pytest.raises(UserError, match="calibrate=true fits the temperature of one checkpoint"):
        run_eval(ensemble)
    with pytest.raises(UserError, match="calibrate='yes': expected true or false"):
        run_eval(eval_cfg(tmp_path, *SYNTHETIC, f"ckpt_path={ckpt}", "calibrate=yes"))

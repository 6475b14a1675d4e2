"""Config values of the wrong type or out of range stop a command before any work, naming the key, the value given
and what is expected (fer_lightning/config_schema.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from fer_lightning.config_schema import ConfigValueError, check_config
from fer_lightning.errors import USER_ERROR_EXIT, UserError
from tests.conftest import compose_train
from tests.scripts import run_script

BAD_VALUES = [
    ("optimizer.lr", "abc", "a number > 0"),  # from the command line a non-number arrives as a string
    ("optimizer.lr", 0, "a number > 0"),
    ("optimizer.lr", -0.001, "a number > 0"),
    ("optimizer.lr", "0.1", "a number > 0"),  # a quoted number stays a string, which torch refuses
    ("optimizer.lr", True, "a number > 0"),
    ("optimizer.lr", float("nan"), "a number > 0"),
    ("optimizer.weight_decay", -0.1, "a number >= 0"),
    ("data.batch_size", 0, "an integer >= 1"),
    ("data.batch_size", -1, "an integer >= 1"),
    ("data.batch_size", 2.5, "an integer >= 1"),
    ("data.batch_size", "64", "an integer >= 1"),
    ("data.eval_batch_size", 0, "an integer >= 1 or null"),
    ("data.num_workers", -1, "an integer >= 0"),
    ("trainer.max_epochs", 0, "an integer >= 1, or -1 for no limit, or null"),
    ("trainer.max_epochs", -2, "an integer >= 1, or -1 for no limit, or null"),
    ("module.label_smoothing", 1.0, "a number in [0, 1)"),
    ("module.label_smoothing", -0.1, "a number in [0, 1)"),
    ("module.mixup_alpha", -0.2, "a number >= 0 (0 = off)"),
    ("module.cutmix_alpha", "x", "a number >= 0 (0 = off)"),
]

GOOD_VALUES = [
    ("optimizer.lr", 1),
    ("optimizer.lr", 1e-5),
    ("optimizer.weight_decay", 0),
    ("data.batch_size", 1),
    ("data.eval_batch_size", None),
    ("data.num_workers", 0),
    ("trainer.max_epochs", -1),  # Lightning's "no limit"
    ("trainer.max_epochs", None),
    ("module.label_smoothing", 0.0),
    ("module.mixup_alpha", 0.2),
]


@pytest.fixture(scope="module")
def train_cfg(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    return compose_train(["optimizer=sgd"], tmp_path_factory.mktemp("cfg"))  # sgd: weight_decay is set


def with_value(cfg: DictConfig, key: str, value) -> DictConfig:
    cfg = cfg.copy()
    OmegaConf.update(cfg, key, value)
    return cfg


def test_the_shipped_config_passes(train_cfg: DictConfig) -> None:
    assert check_config(train_cfg) is train_cfg


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_names_key_value_and_expectation(train_cfg: DictConfig, key: str, value, expected: str) -> None:
    with pytest.raises(ConfigValueError) as error:
        check_config(with_value(train_cfg, key, value))
    assert str(error.value) == f"{key}={value!r}: expected {expected}"
    assert isinstance(error.value, UserError)  # the CLI prints it as one line and exits 2


@pytest.mark.parametrize(("key", "value"), GOOD_VALUES, ids=[f"{k}={v!r}" for k, v in GOOD_VALUES])
def test_a_good_value_passes(train_cfg: DictConfig, key: str, value) -> None:
    check_config(with_value(train_cfg, key, value))


def test_every_bad_value_is_named_at_once(train_cfg: DictConfig) -> None:
    cfg = with_value(with_value(train_cfg, "optimizer.lr", "abc"), "data.batch_size", 0)
    with pytest.raises(ConfigValueError, match=r"optimizer.lr='abc': .*; data.batch_size=0: "):
        check_config(cfg)


def test_keys_a_config_lacks_are_not_checked(tmp_path: Path) -> None:
    cfg = compose_train(["ckpt_path=model.ckpt"], tmp_path, config_name="export")  # no optimizer, data or trainer
    assert check_config(cfg) is cfg


def test_train_script_reports_the_bad_value_before_reading_the_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fer2013.csv"
    result = run_script("train.py", "optimizer.lr=abc", f"data.path={missing}", f"hydra.run.dir={tmp_path}/run",
                        cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == USER_ERROR_EXIT, result.stderr[-3000:]
    assert "error: optimizer.lr='abc': expected a number > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert str(missing) not in result.stderr + result.stdout  # the config was refused before the data was looked for
    # Hydra's own files (.hydra/, the job's log) and nothing of the run's (config_resolved.yaml, checkpoints/)
    written = {path.name for path in (tmp_path / "run").iterdir()}
    assert {name for name in written if not name.endswith(".log")} == {".hydra"}, written

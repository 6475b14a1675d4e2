"""The Hydra entry points: a run's log lines (Lightning's included) printed once and kept in Hydra's log file;
the trainer keys the config lists taken with or without `+`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import fer_lightning.training  # noqa: F401 (imports lightning first, as any run does: the import adds its handler)
from fer_lightning.cli import listed_trainer_plus, log_lightning_once
from tests.conftest import write_fer_csv
from tests.scripts import finish_script, run_script, script_env, start_script


def test_train_script_prints_each_lightning_line_once(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 8, "PublicTest": 4, "PrivateTest": 4})
    overrides = ["debug=fast_dev_run", f"data.path={data}", "data.batch_size=4", "speed.autotune=false"]
    env = script_env(tmp_path)
    env.pop("COLUMNS", None)  # captured output, as in CI or a log file: Rich alone would cut it at 80 columns
    process = start_script("train.py", *overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, env=env)
    result = finish_script(process, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert console.count("GPU available:") == 1, console[-3000:]  # Lightning's Trainer banner
    assert console.count("Seed set to 42") == 1  # lightning.fabric's
    (log_file,) = (tmp_path / "run").glob("*.log")  # Hydra's job log
    assert "GPU available:" in log_file.read_text()
    # the config tree's paths whole, however long tmp_path is
    assert f"dirpath: {tmp_path}/run/checkpoints\n" in result.stdout


@pytest.fixture
def lightning_loggers():
    """The Lightning and root loggers' handlers and propagation, put back after the test."""
    names = ("", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, propagate) in zip(loggers, saved):
        logger.handlers[:], logger.propagate = handlers, propagate


@pytest.mark.usefixtures("lightning_loggers")
def test_without_root_handlers_lightning_keeps_its_own() -> None:
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    root.handlers[:] = []
    own = logging.StreamHandler()
    lightning.handlers[:], lightning.propagate = [own], False
    log_lightning_once()
    assert lightning.handlers == [own]  # else its lines would be printed nowhere
    root.addHandler(logging.NullHandler())  # as Hydra's job logging
    log_lightning_once()
    assert lightning.handlers == []
    assert lightning.propagate  # to Hydra's handlers, its file included


def test_a_listed_trainer_key_is_taken_with_or_without_plus(capsys) -> None:
    argv = ["+trainer.max_time=00:00:30:00", "trainer.max_epochs=3", "++trainer.fast_dev_run=true"]
    argv += ["+trainer.not_a_trainer_argument=1", "+callbacks.x=1", "data.path=+trainer.max_time=x"]
    assert listed_trainer_plus(argv) == ["trainer.max_time=00:00:30:00", *argv[1:]]
    assert "read +trainer.max_time=00:00:30:00 as trainer.max_time=00:00:30:00" in capsys.readouterr().err


def test_train_script_takes_plus_on_a_listed_trainer_key(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 8, "PublicTest": 4, "PrivateTest": 4})
    overrides = ["debug=fast_dev_run", f"data.path={data}", "data.batch_size=4", "speed.autotune=false"]
    overrides += ["+trainer.max_time=00:00:10:00", f"hydra.run.dir={tmp_path}/run"]
    result = run_script("train.py", *overrides, "--cfg", "job", cwd=tmp_path, timeout=300)  # prints, trains nothing
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_time: 00:00:10:00" in result.stdout

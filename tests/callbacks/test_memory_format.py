"""channels_last: where it is switched on, and the odd-batch crash of oneDNN's CPU backward kept out of every run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fer_lightning.callbacks import ChannelsLast
from fer_lightning.speed import channels_last_crash_risk
from tests.conftest import write_fer_csv
from tests.scripts import ROOT, script_env

CPU = torch.device("cpu")


def fitting(batch_size: int, train_rows: int) -> SimpleNamespace:
    labels = np.zeros(train_rows, dtype=np.int64)
    datamodule = SimpleNamespace(batch_size=batch_size, splits={"train": (None, labels)})
    return SimpleNamespace(strategy=SimpleNamespace(root_device=CPU), datamodule=datamodule)


def shortcut(in_channels: int) -> torch.nn.Module:
    """mini_Xception's kind of residual shortcut: a 1x1 stride-2 convolution."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, in_channels, 3), torch.nn.Conv2d(in_channels, 16, 1, stride=2))


def test_narrow_strided_1x1_convolutions_are_the_risk():
    assert channels_last_crash_risk(shortcut(8), CPU, 37)  # AVX-512's kernel: < 16 channels, odd batch
    assert not channels_last_crash_risk(shortcut(8), CPU, 64)
    assert channels_last_crash_risk(shortcut(5), CPU, 64)  # AVX2's kernel: < 8 channels, any batch
    assert not channels_last_crash_risk(shortcut(16), CPU, 37)
    assert not channels_last_crash_risk(torch.nn.Conv2d(1, 2, 3), CPU, 37)  # no 1x1 strided convolution
    assert not channels_last_crash_risk(shortcut(5), torch.device("cuda"), 37)
    assert channels_last_crash_risk(None, CPU, 37)
    assert not channels_last_crash_risk(None, CPU, 64)


def test_a_pinned_channels_last_refuses_a_crashing_model_and_batch_before_any_step():
    module = shortcut(8)
    with pytest.raises(ValueError, match="training batch of 37 images"):
        ChannelsLast(True).setup(fitting(37, 1000), module, "fit")
    with pytest.raises(ValueError, match="training batch of 21"):  # a split smaller than one batch is one batch
        ChannelsLast(True).setup(fitting(64, 21), module, "fit")
    with pytest.raises(ValueError, match="1x1 strided convolutions with few input channels"):
        ChannelsLast(True).setup(fitting(64, 1000), shortcut(5), "fit")
    ChannelsLast(True).setup(fitting(64, 1000), module, "fit")  # even: the short last batch is dropped
    assert module[1].weight.is_contiguous(memory_format=torch.channels_last)
    ChannelsLast(True).setup(fitting(37, 1000), torch.nn.Conv2d(1, 2, 3), "fit")  # no such layer: nothing to refuse
    ChannelsLast(False).setup(fitting(37, 1000), shortcut(5), "fit")  # off: nothing to refuse


SETTINGS = [(p, c) for p in ("32-true", "bf16-mixed") for c in (False, True)]

# Two threads: the oneDNN kernel that crashed needs two or more (experiments/repro/channels_last_crash.py).
EPOCHS_OF_EVERY_SETTING = """
import json, sys
from fer_lightning.config import compose
from fer_lightning.training import run_training
data, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for precision, channels_last in settings:
    run = f"{out}/{precision}-{channels_last}"
    cfg = compose("train", [f"data.path={data}", "model=mini_xception", "aug=light", "data.batch_size=8",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "logger=none", f"trainer.precision={precision}",
        f"callbacks.channels_last.enabled={channels_last}", f"paths.output_dir={run}"], output_dir=run)
    print(json.dumps([precision, channels_last, run_training(cfg)["test/acc"]]), flush=True)
"""


def test_a_full_epoch_of_every_setting_the_autotune_can_choose(tmp_path: Path):
    # 45 training images in batches of 8 end in a short batch of 5: an odd batch, which crashed the channels_last
    # backward (segfault) before training dropped it; in a subprocess so that a crash fails the test, not pytest
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 45, "PublicTest": 9, "PrivateTest": 9})
    result = subprocess.run(
        [sys.executable, "-c", EPOCHS_OF_EVERY_SETTING, str(data), str(tmp_path), json.dumps(SETTINGS)],
        cwd=ROOT, env=script_env(tmp_path, OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    finished = [json.loads(line)[:2] for line in result.stdout.splitlines() if line.startswith("[")]
    assert finished == [list(s) for s in SETTINGS]

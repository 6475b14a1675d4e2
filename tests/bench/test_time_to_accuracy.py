"""The time-to-accuracy race: one tiny end-to-end run on the synthetic data (both arms stop after their first batch,
so it is deterministic and takes seconds), and the pure pieces (reading times off a curve, ratios, the table, the
budget clocks) on hand-made inputs. Real-data times are measured by the command itself, never asserted here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, TensorDataset

from fer_lightning.bench import time_to_accuracy as tta
from fer_lightning.bench.plain import evaluate
from fer_lightning.callbacks import TrainingClock, training_clock

pytestmark = pytest.mark.usefixtures("one_thread")

# the smallest real run: 3 training batches an epoch at most, 2 of 64 of PublicTest and of PrivateTest, no workers,
# no sanity-check validation
TINY = [
    "data=synthetic", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "data.num_workers=0", "data.eval_batch_size=64", "trainer.num_sanity_val_steps=0",
]  # fmt: skip


def test_race_runs_both_arms_and_writes_json_table_and_plot(tmp_path: Path, capsys) -> None:
    # a budget of 6 ms: every arm stops after the step that spends it, its first, before the epoch's end
    results = tta.run(["--budget-min", "0.0001", "--out", str(tmp_path), *TINY])

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert list(saved["arms"]) == ["framework", "plain"]
    for arm in saved["arms"].values():
        assert len(arm["curve"]) == 1  # the evaluation at the stop
        train_s, images, val_acc = arm["curve"][0]
        assert images == 64  # one batch of the 3 the epoch allows: stopped mid-epoch
        assert train_s >= 0.006
        assert 0 <= val_acc <= 1
        assert arm["best_val_acc"] == val_acc
        assert 0 <= arm["test_acc"] <= 1
        assert arm["train_s"] == train_s
        assert set(arm["time_to"]) == set(arm["images_to"]) == {"0.55", "0.6", "0.65", "0.68", "0.7"}
    framework = saved["arms"]["framework"]
    assert Path(framework["selected_checkpoint"]).exists()
    assert (tmp_path / "framework" / "metrics.json").exists()
    assert set(saved["ratios"]) == set(framework["time_to"])
    assert saved["overrides"] == TINY
    assert saved["command"].startswith("python -m fer_lightning.bench.time_to_accuracy")
    assert saved["run"]["model"] == "mini_xception"
    assert saved["machine"]["cores"] >= 1

    table = (tmp_path / "results.md").read_text()
    assert "| framework |" in table
    assert "| plain |" in table
    assert "| plain / framework time |" in table
    assert table in capsys.readouterr().out
    png = (tmp_path / "time_to_accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_race_refuses_an_earlier_framework_run_directory(tmp_path: Path) -> None:
    (tmp_path / "framework").mkdir()
    (tmp_path / "framework" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="not empty"):
        tta.run(["--budget-min", "1", "--out", str(tmp_path), "data=synthetic"])


CURVE = [[60.0, 640.0, 0.50], [120.0, 1280.0, 0.56], [180.0, 1920.0, 0.55], [240.0, 2560.0, 0.61]]


def test_time_to_is_the_first_evaluation_at_or_above_the_threshold() -> None:
    assert tta.time_to(CURVE, 0.55) == 120.0  # the first at or above, not interpolated between 60 and 120 s
    assert tta.time_to(CURVE, 0.56) == 120.0  # "at" counts
    assert tta.time_to(CURVE, 0.60) == 240.0  # the later dip below 0.56 does not matter
    assert tta.time_to(CURVE, 0.70) is None
    assert tta.time_to(CURVE, 0.60, axis=1) == 2560.0
    assert tta.time_to([], 0.5) is None


def test_summary_reads_every_threshold_off_the_curve() -> None:
    arm = tta.summary(CURVE, 0.58, 4, [0.55, 0.6, 0.7], extra="kept")
    assert arm["time_to"] == {"0.55": 120.0, "0.6": 240.0, "0.7": None}
    assert arm["images_to"] == {"0.55": 1280.0, "0.6": 2560.0, "0.7": None}
    assert (arm["best_val_acc"], arm["test_acc"], arm["epochs"], arm["train_s"]) == (0.61, 0.58, 4, 240.0)
    assert arm["extra"] == "kept"
    assert tta.summary([], None, 0, [0.5])["best_val_acc"] is None


def test_ratio_is_plain_over_framework_or_a_lower_bound() -> None:
    assert tta.ratio(240.0, 120.0, 600.0) == (2.0, False)
    assert tta.ratio(None, 120.0, 600.0) == (5.0, True)  # plain never got there in its 600 s
    assert tta.ratio(240.0, None, 600.0) == (None, False)  # no framework time: no ratio
    assert tta.ratio_text(2.0, False) == "2.00x"
    assert tta.ratio_text(5.0, True) == "> 5.00x"
    assert tta.ratio_text(None, False) == "—"


def hand_made_results() -> dict:
    thresholds = [0.55, 0.6, 0.7]
    framework = tta.summary(CURVE, 0.6, 4, thresholds)
    plain = tta.summary([[300.0, 3000.0, 0.52], [480.0, 4800.0, 0.57], [600.0, 6000.0, 0.58]], 0.56, 3, thresholds)
    return {
        "budget_min": 10.0, "thresholds": thresholds, "date": "2026-01-01T00:00:00", "torch": "2.x",
        "machine": {"cpu": "a CPU", "cores": 2}, "run": {"model": "mini_xception", "aug": "light", "data": "x.csv"},
        "command": "python -m fer_lightning.bench.time_to_accuracy", "overrides": [],
        "arms": {"framework": framework, "plain": plain}, "ratios": tta.ratios(plain, framework),
    }  # fmt: skip


def test_ratios_and_markdown_table() -> None:
    results = hand_made_results()
    assert {key: row["text"] for key, row in results["ratios"].items()} == {
        "0.55": "4.00x",  # 480 s against 120 s
        "0.6": "> 2.50x",  # plain's whole 600 s against the framework's 240 s
        "0.7": "—",
    }
    lines = tta.markdown(results).splitlines()
    header = next(line for line in lines if line.startswith("| arm |"))
    assert header.endswith("| min to 55% | min to 60% | min to 70% |")
    assert "| framework | 61.00% | 60.00% | 4 | 4.00 | 2.00 | 4.00 | — |" in lines
    assert "| plain | 58.00% | 56.00% | 3 | 10.00 | 8.00 | — | — |" in lines
    assert "| plain / framework time |  |  |  |  | 4.00x | > 2.50x | — |" in lines


def test_plot_draws_hand_made_curves(tmp_path: Path) -> None:
    tta.plot(hand_made_results(), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_read_curve_keeps_the_fits_validations_only(tmp_path: Path) -> None:
    # the layout csv/metrics.csv has: training rows, and after the fit run_training's validate and test rows
    header = "epoch,step,test/acc,time/images_seen,time/train_s,train/loss,val/acc"
    rows = [
        "0,2,,192.0,1.7,,0.20",
        "0,2,,,,2.03,",
        "1,5,,384.0,3.2,,0.23",
        "2,6,,,,,0.23",  # the re-validation of the selected checkpoint: TrainingClock logs nothing there
        "2,6,0.23,,,,",
    ]
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    assert tta.read_curve(path) == [[1.7, 192.0, 0.20], [3.2, 384.0, 0.23]]
    with pytest.raises(FileNotFoundError, match="logger=csv"):
        tta.read_curve(tmp_path / "missing.csv")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_train_epoch_clock_counts_training_not_validation_and_stops_at_the_budget(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(training_clock.time, "perf_counter", clock)
    logged = {}
    module = SimpleNamespace(device=torch.device("cpu"), log=lambda key, value, **_: logged.__setitem__(key, value))
    trainer = SimpleNamespace(should_stop=False, sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING))
    timer, batch = TrainingClock(budget_s=10.0), (torch.zeros(8, 1, 4, 4), torch.zeros(8))

    timer.on_train_epoch_start(trainer, module)
    clock.now = 4.0
    timer.on_train_batch_end(trainer, module, None, batch, 0)
    assert not trainer.should_stop
    timer.on_validation_start(trainer, module)  # the end-of-epoch validation: 4 s of training so far
    clock.now = 30.0
    timer.on_validation_epoch_end(trainer, module)
    assert logged == {tta.CLOCK: 4.0, tta.IMAGES: 8.0}
    timer.on_train_epoch_end(trainer, module)  # still paused: the 26 s of validation are not counted
    assert timer.seconds == 4.0

    timer.on_train_epoch_start(trainer, module)
    clock.now = 37.0
    timer.on_train_batch_end(trainer, module, None, batch, 0)
    assert trainer.should_stop
    assert timer.elapsed() == 11.0  # 4 + 7 s: the budget is spent, mid-epoch

    trainer.state.fn, logged = TrainerFn.VALIDATING, {}
    timer.on_validation_epoch_end(trainer, module)
    assert logged == {}  # run_training's validation of the selected checkpoint is not a curve point


def tiny_loaders(batch_size: int = 8) -> dict[str, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64, 1, 6, 6, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    train = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True, generator=generator)
    held_out = DataLoader(TensorDataset(images[:32], labels[:32]), batch_size=16)
    return {"train": train, "val": held_out, "test": held_out}


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))


def test_race_plain_stops_mid_epoch_when_the_budget_is_spent() -> None:
    net = tiny_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    limits = {"train": 0, "val": 0, "test": 0}
    curve, best = tta.race_plain(net, optimizer, tiny_loaders(), torch.device("cpu"), 1e-9, math.inf, limits)
    assert len(curve) == 1
    assert curve[0][1] == 8.0  # the first step spends the budget: 1 of the 8 batches
    assert set(best) == set(net.state_dict())


def test_race_plain_evaluates_every_epoch_and_keeps_the_best_weights() -> None:
    net, loaders = tiny_net(), tiny_loaders()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    limits = {"train": 2, "val": 0, "test": 0}
    curve, best = tta.race_plain(net, optimizer, loaders, torch.device("cpu"), math.inf, 3, limits)
    assert [point[1] for point in curve] == [16.0, 32.0, 48.0]  # 2 batches of 8 per epoch, cumulated
    assert curve[0][0] < curve[1][0] < curve[2][0]
    net.load_state_dict(best)
    assert evaluate(net, loaders["val"], torch.device("cpu")) == max(point[2] for point in curve)


def test_batch_limit_and_max_time() -> None:
    assert [tta.batch_limit(v, 10) for v in (None, 1.0, 3, 0.25)] == [0, 0, 3, 2]
    assert tta.hms(2 * 45 + 60) == "00:00:02:30"
    assert tta.hms(2 * 3 * 3600 + 60.2) == "00:06:01:01"  # whole seconds, rounded up
    overrides = tta.framework_overrides(["model=resnet18"], 90.0)
    assert overrides[:2] == ["logger=csv", "model=resnet18"]  # the user's choices win over the CSV default
    assert "++trainer.max_time=00:00:04:00" in overrides
    assert "++callbacks.training_clock.budget_s=90.0" in overrides

"""Learning-rate schedules from config: warmup_cosine per optimizer step over the trainer's own step count,
plateau per epoch on the metric the config names, budget_cosine over the training-time budget."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch

from fer_lightning.callbacks.training_clock import TrainingClock
from fer_lightning.schedulers import TimeBudgetCosine, build_lr_scheduler
from fer_lightning.training import build_run
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import one_thread  # noqa: F401 (fixture)

BASE_LR = 0.01
EPOCHS, TRAIN_ROWS, BATCH = 3, 24, 4  # 6 batches an epoch


class LearningRateProbe(L.Callback):
    """The learning rate each optimizer step is taken with, and the one left after the last step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.final: float | None = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.final = trainer.optimizers[0].param_groups[0]["lr"]


def fit(tmp_path: Path, *overrides: str) -> tuple[L.Trainer, LearningRateProbe]:
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": TRAIN_ROWS, "PublicTest": 8, "PrivateTest": 8})
    cfg = compose_train(
        [
            f"data.path={data}",
            "model=tiny_xception",
            "aug=none",
            "data.num_workers=0",
            f"data.batch_size={BATCH}",
            "logger=none",
            "trainer.accelerator=cpu",
            f"trainer.max_epochs={EPOCHS}",
            "trainer.num_sanity_val_steps=0",
            f"optimizer.lr={BASE_LR}",
            "+callbacks.lr_probe._target_=tests.test_schedulers.LearningRateProbe",
            *overrides,
        ],
        tmp_path,
    )
    datamodule, module, trainer = build_run(cfg)
    trainer.fit(module, datamodule=datamodule)
    # by name: Hydra imports this module as `tests.test_schedulers`, pytest may have imported it under another name
    return trainer, next(c for c in trainer.callbacks if type(c).__name__ == LearningRateProbe.__name__)


def warmup_cosine_lr(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear from 0 to BASE_LR over `warmup` steps, then a half cosine from BASE_LR to floor * BASE_LR."""
    if step < warmup:
        return BASE_LR * step / warmup
    progress = (step - warmup) / (total - warmup)
    return BASE_LR * (floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("overrides", "total", "warmup"),
    [
        (["scheduler.scheduler.warmup_fraction=0.3"], EPOCHS * 6, 5),  # round(0.3 * 18)
        # 2 batches an optimizer step: half the steps, counted by the trainer; warmup_steps wins over the fraction
        (["trainer.accumulate_grad_batches=2", "scheduler.scheduler.warmup_steps=2"], EPOCHS * 3, 2),
    ],
)
def test_warmup_cosine_rises_then_follows_the_cosine_step_by_step(
    tmp_path: Path, overrides: list[str], total: int, warmup: int
) -> None:
    floor = 0.1
    trainer, probe = fit(tmp_path, "scheduler=warmup_cosine", f"scheduler.scheduler.min_lr_ratio={floor}", *overrides)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert len(probe.lrs) == total
    assert probe.lrs == pytest.approx([warmup_cosine_lr(step, warmup, total, floor) for step in range(total)])
    rising, falling = probe.lrs[: warmup + 1], probe.lrs[warmup:]
    assert all(a < b for a, b in zip(rising, rising[1:])), rising
    assert all(a > b for a, b in zip(falling, falling[1:])), falling
    assert falling[0] == pytest.approx(BASE_LR)
    assert probe.final == pytest.approx(floor * BASE_LR)  # the floor, after the last step


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("monitor", "mode"), [("val/acc", "max"), ("val/loss", "min")])
def test_plateau_steps_once_an_epoch_on_the_configured_metric(tmp_path: Path, monitor: str, mode: str) -> None:
    # No later epoch can beat the first by 2 (accuracy or loss): with patience 0 every later epoch halves the rate
    overrides = [f"scheduler.monitor={monitor}", f"scheduler.scheduler.mode={mode}", "scheduler.scheduler.patience=0"]
    overrides += ["+scheduler.scheduler.threshold_mode=abs", "+scheduler.scheduler.threshold=2.0"]
    trainer, probe = fit(tmp_path, "scheduler=plateau", *overrides)
    (config,) = trainer.lr_scheduler_configs
    assert (config.interval, config.frequency, config.monitor) == ("epoch", 1, monitor)
    assert config.reduce_on_plateau
    assert probe.lrs == pytest.approx([BASE_LR] * 12 + [BASE_LR / 2] * 6)  # constant within each epoch
    assert probe.final == pytest.approx(BASE_LR / 4)


def adam() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=BASE_LR)


def test_warmup_cosine_takes_its_length_from_the_trainer(tmp_path: Path) -> None:
    cfg = compose_train(["scheduler=warmup_cosine"], tmp_path)
    trainer = SimpleNamespace(estimated_stepping_batches=200, max_epochs=10)
    config = hydra.utils.instantiate(cfg.scheduler)(optimizer=adam(), trainer=trainer)
    assert (config["interval"], config["frequency"]) == ("step", 1)
    schedule = config["scheduler"].lr_lambdas[0].keywords
    assert (schedule["total_steps"], schedule["warmup_steps"]) == (200, 10)  # 5 % warmup by default
    with pytest.raises(ValueError, match="comes from the trainer"):
        hydra.utils.instantiate(cfg.scheduler)(optimizer=adam())
    unbounded = SimpleNamespace(estimated_stepping_batches=float("inf"), max_epochs=-1)
    with pytest.raises(ValueError, match="needs a bounded run"):
        hydra.utils.instantiate(cfg.scheduler)(optimizer=adam(), trainer=unbounded)


def test_total_steps_are_counted_in_the_schedulers_own_steps() -> None:
    trainer = SimpleNamespace(estimated_stepping_batches=120, max_epochs=10)
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1)
    build = functools.partial(build_lr_scheduler, optimizer=adam(), scheduler=one_cycle, trainer=trainer)
    assert build(interval="step")["scheduler"].total_steps == 120
    assert build(interval="step", frequency=4)["scheduler"].total_steps == 30
    assert build(interval="epoch")["scheduler"].total_steps == 10
    kept = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=7)
    assert build(scheduler=kept, interval="step")["scheduler"].total_steps == 7  # set in the config: kept
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=5)
    assert build_lr_scheduler(adam(), cosine)["interval"] == "epoch"  # no total_steps argument: no trainer needed


@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "max"), ("val/acc", "min")])
def test_plateau_refuses_a_metric_watched_the_wrong_way(monitor: str, mode: str) -> None:
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode=mode)
    with pytest.raises(ValueError, match=f"scheduler.monitor={monitor} with scheduler.scheduler.mode={mode}"):
        build_lr_scheduler(adam(), plateau, monitor=monitor)


class FakeClock(TrainingClock):
    """A TrainingClock whose elapsed time the test sets."""

    def __init__(self, budget_s: float) -> None:
        super().__init__(budget_s)
        self.now = 0.0

    def elapsed(self) -> float:
        return self.now


def test_budget_cosine_follows_the_fraction_of_the_training_time_spent() -> None:
    clock = FakeClock(budget_s=100.0)
    trainer = SimpleNamespace(callbacks=[clock], world_size=1)
    factory = functools.partial(TimeBudgetCosine, warmup_fraction=0.1, min_lr_ratio=0.01)
    config = build_lr_scheduler(adam(), factory, interval="step", trainer=trainer)
    scheduler, optimizer = config["scheduler"], config["scheduler"].optimizer
    rates = {}
    for now in (0.0, 5.0, 10.0, 55.0, 100.0, 250.0):
        clock.now = now
        scheduler.step()
        rates[now] = optimizer.param_groups[0]["lr"]
    assert rates[0.0] == 0.0
    assert rates[5.0] == pytest.approx(BASE_LR / 2)
    assert rates[10.0] == pytest.approx(BASE_LR)
    assert rates[55.0] == pytest.approx(BASE_LR * (0.01 + 0.99 * 0.5))  # half way down the cosine
    assert rates[100.0] == pytest.approx(BASE_LR * 0.01)
    assert rates[250.0] == rates[100.0]


def test_budget_cosine_checkpoints_without_its_clock(tmp_path: Path) -> None:
    scheduler = TimeBudgetCosine(adam(), FakeClock(budget_s=10.0))
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    state = torch.load(tmp_path / "scheduler.pt", weights_only=True)  # as Lightning's checkpoints are loaded
    assert "clock" not in state
    assert state["base_lrs"] == [BASE_LR]


def test_budget_cosine_needs_a_budget_and_one_process() -> None:
    factory = functools.partial(TimeBudgetCosine)
    for callbacks in ([], [TrainingClock()]):  # no clock, or a clock without a budget
        with pytest.raises(ValueError, match="callbacks.training_clock.budget_s"):
            build_lr_scheduler(adam(), factory, trainer=SimpleNamespace(callbacks=callbacks, world_size=1))
    ddp = SimpleNamespace(callbacks=[TrainingClock(60.0)], world_size=2)
    with pytest.raises(ValueError, match="single-process"):
        build_lr_scheduler(adam(), factory, trainer=ddp)


@pytest.mark.usefixtures("one_thread")
def test_a_budget_run_stops_on_its_budget_with_the_rate_at_its_floor(tmp_path: Path) -> None:
    trainer, probe = fit(
        tmp_path,
        "scheduler=budget_cosine",
        "callbacks.training_clock.budget_s=0.5",
        "trainer.max_epochs=1000",
    )
    assert trainer.current_epoch < 1000  # the budget, not max_epochs, ended the fit
    assert probe.lrs[0] == 0.0
    assert max(probe.lrs) > 0.5 * BASE_LR
    assert probe.final == pytest.approx(BASE_LR * 0.01)

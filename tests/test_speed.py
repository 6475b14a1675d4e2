"""precision: auto, the speed autotune (a fake clock decides the timings) and the timed training step."""

from __future__ import annotations

import functools
import itertools
import json

import pytest
import torch
from torch import nn

from fer_lightning.models import create_model
from fer_lightning.speed import (
    BF16,
    FP32,
    SpeedSetting,
    autotune,
    candidate_settings,
    cpu_flags,
    native_bf16,
    resolve_precision,
    set_matmul_precision,
    settle_speed_settings,
    train_step_images_per_s,
)
from fer_lightning.training import build_module, run_training
from tests.conftest import compose_train

CPU = torch.device("cpu")
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
SHAPE = (4, 1, 48, 48)


class FakeClock:
    """Each timed setting reads the clock three times (before the warmup, at its end, after the last step): the
    durations given are the gaps between the last two reads, one per setting in order."""

    def __init__(self, durations: list[float]) -> None:
        self.reads = iter(itertools.chain.from_iterable((0.0, 0.0, d) for d in durations))

    def __call__(self) -> float:
        return next(self.reads)


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return create_model("simple_cnn", num_classes=7, in_chans=1)


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert native_bf16(CPU, {"avx512f", "avx512_bf16"})
    assert native_bf16(CPU, {"amx_bf16"})
    assert not native_bf16(CPU, {"avx512f", "avx2"})  # AVX-512 alone: bf16 emulated, slower than fp32
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_resolve_precision_keeps_explicit_values_and_picks_by_hardware(monkeypatch):
    assert resolve_precision("32-true", CPU) == "32-true"
    assert resolve_precision("bf16-mixed", CPU) == "bf16-mixed"
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx512_bf16"})
    assert resolve_precision("auto", CPU) == BF16
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx2"})
    assert resolve_precision("auto", CPU) == FP32


def test_candidates_search_only_what_is_left_at_auto(monkeypatch):
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx512_bf16"})
    all_four = candidate_settings("auto", "auto", False, CPU)
    assert all_four[0] == SpeedSetting(BF16, False)  # what a run without the autotune takes comes first
    assert {(s.precision, s.channels_last) for s in all_four} == {
        (FP32, False),
        (FP32, True),
        (BF16, False),
        (BF16, True),
    }
    assert candidate_settings("32-true", True, False, CPU) == [SpeedSetting(FP32, True)]  # pinned: nothing to time
    assert candidate_settings("32-true", "auto", True, CPU) == [
        SpeedSetting(FP32, False, False),
        SpeedSetting(FP32, False, True),
        SpeedSetting(FP32, True, False),
        SpeedSetting(FP32, True, True),
    ]
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx2"})
    assert [s.precision for s in candidate_settings("auto", False, False, CPU)] == [FP32]  # no emulated bf16


def test_autotune_keeps_the_fastest_and_reports_every_rate(net):
    candidates = [SpeedSetting(FP32, False), SpeedSetting(FP32, True), SpeedSetting(BF16, False)]
    result = autotune(net, candidates, SHAPE, 7, ADAM, CPU, steps=2, warmup=0, clock=FakeClock([1.0, 0.5, 2.0]))
    assert result.choice == SpeedSetting(FP32, True)
    assert result.images_per_s == {"fp32 NCHW": 8.0, "fp32 channels_last": 16.0, "bf16 NCHW": 4.0}
    assert result.as_dict()["choice"]["label"] == "fp32 channels_last"


def test_autotune_breaks_ties_towards_the_default(net):
    candidates = [SpeedSetting(BF16, False), SpeedSetting(FP32, False)]
    result = autotune(net, candidates, SHAPE, 7, ADAM, CPU, steps=1, warmup=0, clock=FakeClock([1.0, 1.0]))
    assert result.choice == candidates[0]


def test_autotune_never_picks_a_setting_that_fails(net, monkeypatch):
    real = torch.nn.Module.to

    def refuse_channels_last(module, *args, **kwargs):
        if kwargs.get("memory_format") is torch.channels_last:
            raise RuntimeError("no channels_last kernel here")
        return real(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", refuse_channels_last)
    candidates = [SpeedSetting(FP32, True), SpeedSetting(FP32, False)]
    result = autotune(net, candidates, SHAPE, 7, ADAM, CPU, steps=1, warmup=0, clock=FakeClock([1.0]))
    assert result.choice == SpeedSetting(FP32, False)
    assert list(result.images_per_s) == ["fp32 NCHW"]
    with pytest.raises(RuntimeError, match="no channels_last kernel"):  # the cause itself, when nothing ran
        autotune(net, candidates[:1], SHAPE, 7, ADAM, CPU, steps=1, warmup=0)


def test_autotune_changes_neither_the_weights_nor_the_random_streams(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    autotune(net, [SpeedSetting(FP32, False), SpeedSetting(BF16, True)], SHAPE, 7, ADAM, CPU, steps=1, warmup=1)
    assert torch.equal(torch.rand(3), expected_next)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert net.training
    assert next(net.parameters()).is_contiguous()


def test_timed_step_trains_and_counts_images():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    inputs, targets = torch.randn(8, 4), torch.randint(0, 2, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = model.weight.detach().clone()

    def step_loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs), targets)

    clock = FakeClock([2.0])
    assert train_step_images_per_s(step_loss, optimizer, 8, steps=4, warmup=2, device=CPU, clock=clock) == 16.0
    assert not torch.equal(model.weight, start)  # six optimizer steps ran
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_step_images_per_s(step_loss, optimizer, 8, steps=0, warmup=0, device=CPU)


def test_timed_step_runs_its_forward_under_bf16_autocast():
    net = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    dtypes = []

    def step_loss() -> torch.Tensor:
        logits = net(torch.randn(2, 4))
        dtypes.append(logits.dtype)
        return logits.float().sum()

    train_step_images_per_s(step_loss, optimizer, 2, steps=1, warmup=0, device=CPU, autocast=True)
    assert dtypes == [torch.bfloat16]


# ----- the run's config --------------------------------------------------------------------------------------
def test_settle_times_what_is_left_at_auto_and_writes_the_choice_into_the_config(net, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx512_bf16"})
    cfg = compose_train(["trainer.accelerator=cpu", "data.batch_size=4"], tmp_path)
    assert cfg.trainer.precision == "auto"
    assert cfg.callbacks.channels_last.enabled == "auto"
    # candidates in order: bf16 NCHW, bf16 channels_last, fp32 NCHW, fp32 channels_last; the third is fastest
    result = settle_speed_settings(cfg, net, clock=FakeClock([2.0, 2.0, 1.0, 3.0]))
    assert result.choice == SpeedSetting(FP32, False)
    assert cfg.trainer.precision == FP32
    assert cfg.callbacks.channels_last.enabled is False
    assert result.batch_shape == (4, 1, 48, 48)


def test_settle_times_nothing_when_pinned_or_distributed(net, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx512_bf16"})

    def no_timing(*args, **kwargs):
        raise AssertionError("nothing should be timed")

    monkeypatch.setattr("fer_lightning.speed.time_setting", no_timing)
    pinned = ["trainer.accelerator=cpu", "trainer.precision=32-true", "callbacks.channels_last.enabled=true"]
    cfg = compose_train(pinned, tmp_path)
    assert settle_speed_settings(cfg, net) is None
    assert (cfg.trainer.precision, cfg.callbacks.channels_last.enabled) == (FP32, True)
    cfg = compose_train(["trainer=ddp_cpu"], tmp_path)
    assert settle_speed_settings(cfg, net) is None  # every rank must choose alike: the rules, not a timing
    assert (cfg.trainer.precision, cfg.callbacks.channels_last.enabled) == (BF16, False)
    cfg = compose_train(["trainer.accelerator=cpu", "speed.autotune=false"], tmp_path)
    assert settle_speed_settings(cfg, net) is None
    assert (cfg.trainer.precision, cfg.callbacks.channels_last.enabled) == (BF16, False)
    cfg = compose_train(["debug=fast_dev_run"], tmp_path)  # one batch: timing every setting would take longer
    assert settle_speed_settings(cfg, net) is None
    assert (cfg.trainer.precision, cfg.callbacks.channels_last.enabled) == (BF16, False)


def test_a_run_records_its_choice_and_a_resumed_run_keeps_it(fer_csv, tmp_path):
    overrides = [f"data.path={fer_csv}", "debug=limit", "logger=csv", "trainer.max_epochs=1"]
    cfg = compose_train(overrides, tmp_path)
    run_training(cfg)
    record = json.loads((tmp_path / "run" / "speed.json").read_text())
    assert set(record["images_per_s"]) == {s.label for s in candidate_settings("auto", "auto", False, CPU)}
    assert record["choice"]["label"] in record["images_per_s"]
    assert cfg.trainer.precision == record["choice"]["precision"]
    # resuming: the recorded choice, not a new timing (which could pick another precision mid-run)
    record["choice"] = {"precision": FP32, "channels_last": True, "compile": False}
    (tmp_path / "run" / "speed.json").write_text(json.dumps(record))
    resumed = compose_train(
        [*overrides, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt"], tmp_path
    )
    run_training(resumed)
    assert (resumed.trainer.precision, resumed.callbacks.channels_last.enabled) == (FP32, True)


def test_under_bf16_autocast_logits_and_loss_stay_fp32(tmp_path):
    cfg = compose_train(["model=simple_cnn"], tmp_path)
    module = build_module(cfg)
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.net(module.normalize(images)).dtype == torch.bfloat16  # the convolutions do run in bf16
        assert module(images).dtype == torch.float32
        assert module(images[:, None].expand(4, 2, 1, 48, 48)).dtype == torch.float32  # TTA views averaged in fp32


def test_channels_last_is_no_candidate_for_an_odd_batch_on_the_cpu(monkeypatch):
    monkeypatch.setattr("fer_lightning.speed.cpu_flags", lambda: {"avx512_bf16"})
    assert not any(s.channels_last for s in candidate_settings("auto", "auto", False, CPU, batch_size=37))
    assert any(s.channels_last for s in candidate_settings("auto", "auto", False, CPU, batch_size=64))
    # a model with a 1x1 stride-2 convolution from 5 channels crashes oneDNN's AVX2 kernel at any batch
    narrow = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3), torch.nn.Conv2d(5, 8, 1, stride=2))
    assert not any(s.channels_last for s in candidate_settings("auto", "auto", False, CPU, 64, narrow))
    wide = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Conv2d(8, 16, 1, stride=2))
    assert any(s.channels_last for s in candidate_settings("auto", "auto", False, CPU, 64, wide))


def test_matmul_precision_is_set_on_cuda_only(net, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    assert not set_matmul_precision(CPU, "high")  # on the CPU it would also allow bf16 matmuls in oneDNN
    assert not set_matmul_precision(torch.device("cuda"), None)
    assert calls == []
    # a run on GPUs sets it from its config (trainer=ddp: no timing, so this runs without a GPU)
    settle_speed_settings(compose_train(["trainer=ddp"], tmp_path), net)
    settle_speed_settings(compose_train(["trainer=ddp", "speed.matmul_precision=highest"], tmp_path), net)
    settle_speed_settings(compose_train(["trainer=ddp_cpu"], tmp_path), net)
    assert calls == ["high", "highest"]

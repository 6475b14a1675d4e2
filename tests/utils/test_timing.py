"""The shared training-step clock of the benchmarks."""

from __future__ import annotations

import math

import pytest
import torch

from fer_lightning.utils.timing import train_step_images_per_s

CPU = torch.device("cpu")


def test_runs_warmup_plus_timed_steps_and_trains() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    inputs, targets = torch.randn(8, 4), torch.randint(0, 3, (8,))
    before = net.weight.detach().clone()
    calls = []

    def step_loss() -> torch.Tensor:
        calls.append(1)
        return torch.nn.functional.cross_entropy(net(inputs), targets)

    rate = train_step_images_per_s(step_loss, optimizer, len(inputs), steps=4, warmup=2, device=CPU)
    assert len(calls) == 6
    assert math.isfinite(rate)
    assert rate > 0
    assert not torch.equal(before, net.weight)  # the optimizer stepped: the loop is a real training step


def test_bf16_autocast_reaches_the_forward() -> None:
    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    dtypes = []

    def step_loss() -> torch.Tensor:
        logits = net(torch.randn(2, 4))
        dtypes.append(logits.dtype)
        return logits.float().sum()

    train_step_images_per_s(step_loss, optimizer, 2, steps=1, warmup=0, device=CPU, autocast=True)
    assert dtypes == [torch.bfloat16]


def test_zero_steps_is_an_error() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_step_images_per_s(lambda: torch.zeros(()), torch.optim.SGD([torch.zeros(1)], lr=1), 1, 0, 0, CPU)

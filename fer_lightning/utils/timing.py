"""The clocks the benchmarks share: device synchronisation and the timed training step.

`fer_lightning.bench` (bare step in the framework's precision/layout/compile) and
`fer_lightning.data.bench_loader` (the model step the data path has to feed) time the same loop; it lives here once
so that their figures mean the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: a clock read without this measures the launches, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_images_per_s(
    step_loss: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    images_per_step: int,
    steps: int,
    warmup: int,
    device: torch.device,
    autocast: bool = False,
) -> float:
    """Images/s of `steps` training steps (forward inside `step_loss`, backward, optimizer step) after `warmup`
    untimed ones, which pay for the allocator, oneDNN/cuDNN kernel choice and torch.compile."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 to time anything, got {steps}")
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return steps * images_per_step / (time.perf_counter() - start)

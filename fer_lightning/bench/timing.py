"""The clocks the benchmarks share: device synchronisation, the timed training step and timed calls.

`bench.framework` (bare step in the framework's precision/layout/compile), `bench.loader` (the model step the data
path has to feed) and the run's own speed autotune time the same training loop, so it lives in the library
(`fer_lightning.speed`) and is re-exported here; `bench.framework` and `bench.inference` time inference calls the same
way. Each lives once so that the figures mean the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fer_lightning.speed import synchronize, train_step_images_per_s

__all__ = ["CPU", "synchronize", "timed_calls", "train_step_images_per_s"]

CPU = torch.device("cpu")


def timed_calls(run: Callable[[], object], calls: int, warmup: int = 0, device: torch.device = CPU) -> list[float]:
    """Seconds of each of `calls` calls of `run()`, after `warmup` untimed ones (allocator, kernel choice,
    torch.compile for the shape); synchronised around every timed call, so a GPU's work is what is timed."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times

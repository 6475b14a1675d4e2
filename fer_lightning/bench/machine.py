"""What machine a benchmark ran on, and how much memory a measured path took on it."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def visible_cores() -> int:
    """The cores this process may run on (taskset, cgroups' cpusets), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> dict[str, str | int]:
    """The machine's description; `name` (the GPU, else cores and CPU model) names the result files."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    name = f"gpu-{gpu}" if gpu else f"cpu-{visible_cores()}c-{cpu_name()}"
    return {
        "name": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"), "cpu": cpu_name(), "cores": visible_cores(),
        "torch_threads": torch.get_num_threads(), "gpu": gpu or "none", "torch": torch.__version__,
        "python": platform.python_version(),
    }  # fmt: skip


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS; elsewhere the peak is the lifetime peak
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    """CUDA memory allocated at the peak, or on the CPU the process's peak RSS (workers are other processes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(device: torch.device, run: Callable[[], object]) -> tuple[object, float]:
    """`run()` and the peak memory it reached."""
    reset_peak_memory(device)
    result = run()
    return result, peak_memory_mib(device)

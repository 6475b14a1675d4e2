"""Running the root scripts (`train.py`, `eval.py`) in subprocesses that can neither hang nor oversubscribe the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """One torch thread per process (the tests share a few cores) and a W&B that stays offline inside tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {
        "OMP_NUM_THREADS": "1",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / ".wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / ".wandb_cache"),
        "WANDB_DATA_DIR": str(tmp_path / ".wandb_data"),
        "NETRC": str(tmp_path / "no_netrc"),  # no API key anywhere: the logger must choose offline by itself
    }
    return env | extra


def start_script(script: str, *overrides: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: DDP workers die with it on a timeout
    )


def finish_script(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{process.args} did not finish in {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_script(script: str, *overrides: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return finish_script(start_script(script, *overrides, cwd=cwd, env=script_env(cwd)), timeout)


@pytest.fixture
def one_thread():
    """In-process runs on one torch thread: on a shared 2-core machine more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

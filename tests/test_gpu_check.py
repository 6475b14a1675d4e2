"""`make gpu-check` (scripts/gpu_check.sh) where there is no CUDA: it says so, runs nothing and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.scripts import ROOT


def test_without_cuda_the_gpu_check_says_so_and_runs_nothing(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES="": torch sees no GPU here even on a GPU machine
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "PY": sys.executable, "OUT": str(tmp_path / "out")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "gpu-check: skipped, no CUDA GPU visible to torch" in result.stdout
    assert not (tmp_path / "out").exists()  # no step started


def test_make_gpu_check_runs_the_script() -> None:
    dry_run = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "bash scripts/gpu_check.sh" in dry_run.stdout

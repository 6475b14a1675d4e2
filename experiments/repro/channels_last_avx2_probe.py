"""The AVX2 form of issue 14's channels_last crash: oneDNN's strided 1x1 backward-data kernel, few input channels.

On a CPU without AVX-512 (`brgconv_strided:avx2` in ONEDNN_VERBOSE=1), torch 2.13.0+cpu corrupts the heap in the
backward of a 1x1 stride-2 convolution over channels_last input with fewer than 8 input channels, at any batch and
thread count: tiny_xception (a 5-channel shortcut) died this way in `fer-bench-zoo`'s channels_last trial, while
mini_Xception (8-channel shortcut) passes. `fer_lightning.speed.channels_last_crash_risk` keeps such models off
channels_last on the CPU.

    .venv/bin/python experiments/repro/channels_last_avx2_probe.py    # every channel count, each in a subprocess

Measured 2026-12-04 with this command on the 2-core AMD EPYC (AVX2, no AVX-512; torch 2.13.0+cpu, oneDNN v3.12.0),
batch 64, one thread, 44x44 input, three backward passes, one process per case:
    in channels 1, 3, 4, 5: crash (rc -11, SIGSEGV); 2, 6, 7: crash (rc -6, glibc "corrupted double-linked list",
    "free(): invalid next size", "double free or corruption"); 8, 10, 12, 13, 16, 20: pass.
    `--batch 37 --threads 2 --channels 8 16` (AVX-512's odd-batch case): both pass here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

CASE = """
import sys, torch
batch, channels, threads = map(int, sys.argv[1:4])
torch.set_num_threads(threads)
conv = torch.nn.Conv2d(channels, 16, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
x = torch.randn(batch, channels, 44, 44).to(memory_format=torch.channels_last).requires_grad_()
for _ in range(3):
    conv(x).sum().backward()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 16, 20])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, batch {args.batch}, {args.threads} thread(s)")
    for channels in args.channels:
        run = subprocess.run(
            [sys.executable, "-c", CASE, str(args.batch), str(channels), str(args.threads)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        outcome = "pass" if run.returncode == 0 else f"crash (rc {run.returncode}) {run.stderr.strip()[-60:]}"
        print(f"in channels {channels:3d}: {outcome}", flush=True)


if __name__ == "__main__":
    main()

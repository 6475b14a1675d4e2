"""Minimal reproduction of issue 14's crash: oneDNN's AVX-512 1x1 backward-weights kernel on an odd batch.

What it shows
-------------
The real-FER2013 epoch of mini_Xception with channels_last on the CPU died in autograd's backward (segfault, or
glibc's `double free or corruption (!prev)`) on the epoch's last batch: 28,709 % 64 = 37 images. The trigger is
one layer, mini_Xception's first residual shortcut, a 1x1 stride-2 convolution from 8 to 16 channels on 44x44,
whose weight gradient oneDNN v3.12 (the one in torch 2.13.0+cpu) computes with `jit_1x1:avx512_core` (fp32) or
`jit_bf16_1x1:avx512_core_bf16` (bf16 on an AVX512-BF16 CPU without AMX) and corrupts the heap when all of these
hold:
- NHWC (channels_last) source and output gradient, stride > 1 (the kernel's "reduce to unit stride" path),
- fewer than 16 input channels (one AVX-512 register of fp32: 4, 8 and 12 crash; 16, 24, 32, 40 do not),
- an odd minibatch (every odd N from 3 to 63 crashes, every even N and N = 1 passes),
- two or more intra-op threads (2, 3, 4 and 8 crash alike; 1 thread never does).
NCHW, `torch.backends.mkldnn.enabled=False` (for the backward alone is enough), a stride-1 1x1 conv, the AVX2 and
AMX kernels (`ONEDNN_MAX_CPU_ISA=AVX2`; bf16 on an AMX CPU, which uses `brgconv_bwd_w`) all pass. The depthwise
convolutions, the device augmentation (its batches are contiguous (N, 1, 48, 48) uint8) and the short batch as
such are not involved: an odd batch of any size crashes in every step, a short even one never.

Why "intermittent": fp32 crashes on every CPU with AVX-512; bf16 only where there is no AMX, since with AMX
oneDNN picks another kernel. The issue's box (AVX512-BF16, no AMX) crashed in bf16; this session's VM (AMX,
AVX10.1) passes bf16 and crashes fp32 every time, and `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16` brings the bf16 crash
back here. (Runs of the full command that hit the 600 s timeout under a busy host are no evidence either way.)

Command
-------
    .venv/bin/python experiments/repro/channels_last_crash.py             # every case, in subprocesses, 10 tries
    .venv/bin/python experiments/repro/channels_last_crash.py --tries 3
    .venv/bin/python experiments/repro/channels_last_crash.py --case fp32_cl_odd   # one case, in this process
    .venv/bin/python experiments/repro/channels_last_crash.py --check      # workaround grads vs NCHW

Measured (torch 2.13.0+cpu, oneDNN v3.12.0, 2 threads, Intel Xeon with AVX-512 + AMX), crashes / tries; a crash
is SIGSEGV (rc -11 here, 139 in a shell) or SIGABRT after glibc's "double free or corruption (!prev)" (-6 / 134):
    case                                                         crashes
    fp32_cl_odd                 (N=37, channels_last, 2 threads)  10/10  SIGSEGV
    fp32_cl_odd_3               (N=3)                             10/10  SIGSEGV
    fp32_cl_even                (N=36)                             0/10
    fp32_nchw_odd               (N=37, NCHW)                       0/10
    fp32_cl_odd_1thread                                            0/10
    fp32_cl_odd_mkldnn_off_backward                                0/10
    fp32_cl_odd_ic16            (16 input channels)                0/10
    fp32_cl_odd_stride1                                            0/10
    bf16_cl_odd                 (AMX kernel on this VM)            0/10
    bf16_cl_odd_no_amx          (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16)  10/10  SIGSEGV and SIGABRT
    mini_xception_fp32_cl_odd   (the whole model, N=37)           10/10  SIGSEGV and SIGABRT
Scans of the single layer: every odd N in 3..63 crashes at 2, 3, 4 and 8 threads, no even N does, nor any N on 1
thread; input channels 4, 8, 12 crash, 16, 24, 32, 40 do not; ONEDNN_MAX_CPU_ISA=AVX2 (jit_1x1:avx2) and below pass.
Whole mini_Xception, pseudo-epochs of 10 x 64 + 1 x 37 images, 3 epochs: unguarded 3/3 crash (fp32), 3/3 (bf16
without AMX); backward of the odd batch on 1 thread 0/5 (fp32), 0/5 (bf16 without AMX); without oneDNN 0/5.
The framework, full real-FER2013 epoch of the issue's command at 8922129 (before drop_last): fp32 2/2 crashed (rc
139), bf16 2/2 passed on this AMX VM; a 45-image FER2013-format CSV, batch 8 (last batch 5), 2 epochs, 2 threads,
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16: fp32 channels_last rc 139, bf16 channels_last rc 134, fp32 NCHW rc 0.

`--check`: the crashing layer's gradients under either guard match NCHW to 5e-7 (relative).
Cost on the 2-core box (3 interleaved rounds, median ms per training step of mini_Xception, Adam, 48x48):
fp32 channels_last 91 ms at 64 images (702 img/s), 51 ms at 36; the 37-image step with its backward on 1 thread
61 ms, without oneDNN 301 ms; NCHW 125 ms at 64 (511 img/s); oneDNN off for everything 658 ms at 64 (97 img/s).
bf16: channels_last 72 ms at 64 (894 img/s), 42 at 36, 37 on 1 thread 50, without oneDNN 289; NCHW 85 (754 img/s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

# name -> (dtype, channels_last, batch, in_chans, stride, threads, mkldnn in backward, extra env, model)
CASES: dict[str, tuple] = {
    "fp32_cl_odd": ("fp32", True, 37, 8, 2, 0, True, {}, "conv"),
    "fp32_cl_odd_3": ("fp32", True, 3, 8, 2, 0, True, {}, "conv"),
    "fp32_cl_even": ("fp32", True, 36, 8, 2, 0, True, {}, "conv"),
    "fp32_nchw_odd": ("fp32", False, 37, 8, 2, 0, True, {}, "conv"),
    "fp32_cl_odd_1thread": ("fp32", True, 37, 8, 2, 1, True, {}, "conv"),
    "fp32_cl_odd_mkldnn_off_backward": ("fp32", True, 37, 8, 2, 0, False, {}, "conv"),
    "fp32_cl_odd_ic16": ("fp32", True, 37, 16, 2, 0, True, {}, "conv"),
    "fp32_cl_odd_stride1": ("fp32", True, 37, 8, 1, 0, True, {}, "conv"),
    "bf16_cl_odd": ("bf16", True, 37, 8, 2, 0, True, {}, "conv"),
    "bf16_cl_odd_no_amx": ("bf16", True, 37, 8, 2, 0, True, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "conv"),
    "mini_xception_fp32_cl_odd": ("fp32", True, 37, 1, 2, 0, True, {}, "mini_xception"),
}


def build(model: str, in_chans: int, stride: int) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The crashing layer alone (mini_Xception's blocks.0.shortcut[0] on its 44x44 input), or the whole model."""
    if model == "mini_xception":
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
        from fer_lightning.models import create_model

        return create_model("mini_xception", num_classes=7, in_chans=1), (1, 48, 48)
    return torch.nn.Conv2d(in_chans, 16, 1, stride=stride, bias=False), (in_chans, 44, 44)


def run_case(name: str, steps: int = 5) -> None:
    dtype, channels_last, batch, in_chans, stride, threads, mkldnn_backward, _, model = CASES[name]
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, shape = build(model, in_chans, stride)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    for _ in range(steps):
        x = torch.randn(batch, *shape).contiguous(memory_format=layout).requires_grad_(model == "conv")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = net(x)
        loss = (
            out.float().square().mean() if model == "conv" else F.cross_entropy(out.float(), torch.zeros(batch).long())
        )
        with torch.backends.mkldnn.flags(enabled=mkldnn_backward):
            loss.backward()
    print(f"{name}: ok")


def check_workarounds() -> None:
    """The crashing conv's gradients under the two backward guards equal the NCHW ones (the op is linear)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 1, stride=2, bias=False)
    x, g = torch.randn(37, 8, 44, 44), torch.randn(37, 16, 22, 22)

    def grads(layout, guard) -> tuple[torch.Tensor, torch.Tensor]:
        c = conv.to(memory_format=layout)
        c.weight.grad = None
        xi = x.contiguous(memory_format=layout).detach().requires_grad_()
        y = c(xi)
        with guard():
            y.backward(g.contiguous(memory_format=layout))
        return c.weight.grad.clone(), xi.grad.clone()

    @contextlib.contextmanager
    def one_thread():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    ref = grads(torch.contiguous_format, contextlib.nullcontext)
    for label, guard in [("mkldnn off", lambda: torch.backends.mkldnn.flags(enabled=False)), ("1 thread", one_thread)]:
        got = grads(torch.channels_last, guard)
        err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, ref))
        print(f"channels_last backward with {label}: max relative difference to NCHW {err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case here (it may crash this process)")
    parser.add_argument("--tries", type=int, default=10, help="subprocess runs per case")
    parser.add_argument("--check", action="store_true", help="compare the workarounds' gradients with NCHW")
    args = parser.parse_args()
    if args.check:
        check_workarounds()
        return
    if args.case:
        run_case(args.case)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; crashes / tries (rc of each try)")
    for name, (*_, env, _model) in CASES.items():
        codes = [
            subprocess.run(
                [sys.executable, __file__, "--case", name], env=os.environ | env, capture_output=True
            ).returncode
            for _ in range(args.tries)
        ]
        print(f"  {name:34s} {sum(c != 0 for c in codes):2d}/{args.tries}  rc {sorted(set(codes))}", flush=True)


if __name__ == "__main__":
    main()

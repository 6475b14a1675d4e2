"""CPU inference benchmark of one checkpoint: PyTorch eager vs TorchScript vs ONNX Runtime.

`fer-bench-inference --ckpt model.ckpt [--threads 1] [--batch 256]` (`python -m fer_lightning.bench.inference`)
exports the checkpoint (ONNX, verified to 1e-5, and TorchScript) into a temporary folder, then measures for each
runtime:
- single-face latency: batch 1, median and 90th percentile over `--iters` calls after a warm-up;
- batch throughput: images/s at `--batch`, from the median of `--repeats` timed calls.
PyTorch runs twice: in its default NCHW layout and in channels_last, which on CPU is several times faster for
mini_Xception's depthwise convolutions and max-pooling.
All runtimes get the same number of intra-op threads. Prints a Markdown table; `--out` also writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fer_lightning.bench.machine import cpu_name, visible_cores
from fer_lightning.bench.timing import timed_calls
from fer_lightning.checkpoint import load_module
from fer_lightning.errors import console_script
from fer_lightning.export import (
    InferenceModel,
    example_batch,
    export_model,
    input_shape,
    onnx_session,
    quiet_torch_warnings,
)

Runner = Callable[[np.ndarray], np.ndarray]


def torch_runner(model: torch.nn.Module, channels_last: bool = False) -> Runner:
    """Eager PyTorch; channels_last (NHWC) lets oneDNN use its faster depthwise/pooling kernels on CPU."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=memory_format) if channels_last else model

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(memory_format=memory_format)).numpy()

    return run


def onnx_runner(path: Path, threads: int) -> Runner:
    session = onnx_session(path, threads)
    return lambda images: session.run(["logits"], {"images": images})[0]


def load_torchscript(path: Path) -> torch.nn.Module:
    with quiet_torch_warnings():
        return torch.jit.load(str(path)).eval()


def build_runners(ckpt: Path, workdir: Path, threads: int) -> dict[str, Runner]:
    module = load_module(ckpt)
    model = InferenceModel(module).eval()
    onnx_path, ts_path = workdir / "model.onnx", workdir / "model.pt"
    export_model(module, "onnx", onnx_path)
    export_model(module, "torchscript", ts_path)
    return {
        "pytorch": torch_runner(model),
        "pytorch channels_last": torch_runner(model, channels_last=True),
        "torchscript": torch_runner(load_torchscript(ts_path)),
        "onnxruntime": onnx_runner(onnx_path, threads),
    }


def check_agreement(runners: dict[str, Runner], images: np.ndarray, atol: float = 1e-4) -> None:
    """Every runtime must compute the same logits, or its speed means nothing."""
    expected = runners["pytorch"](images)
    for name, run in runners.items():
        diff = float(np.abs(run(images) - expected).max())
        if diff > atol:
            raise RuntimeError(f"{name} differs from PyTorch by {diff:.3g} (> {atol:g})")


def measure(runners: dict[str, Runner], shape: tuple[int, int, int], args: argparse.Namespace) -> list[dict]:
    single = example_batch(shape, 1).numpy()
    batch = example_batch(shape, args.batch).numpy()
    check_agreement(runners, batch[:8])
    rows = []
    for name, run in runners.items():
        latency = timed_calls(lambda run=run: run(single), args.iters, warmup=20)
        batched = timed_calls(lambda run=run: run(batch), args.repeats, warmup=2)
        rows.append(
            {
                "runtime": name,
                "batch1_median_ms": 1e3 * statistics.median(latency),
                "batch1_p90_ms": 1e3 * float(np.percentile(latency, 90)),
                f"batch{args.batch}_images_per_s": args.batch / statistics.median(batched),
            }
        )
    return rows


def markdown(rows: list[dict], batch: int) -> str:
    lines = [
        f"| runtime | batch 1 median (ms) | batch 1 p90 (ms) | batch {batch} (images/s) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['runtime']} | {row['batch1_median_ms']:.2f} | {row['batch1_p90_ms']:.2f} | "
            f"{row[f'batch{batch}_images_per_s']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-bench-inference", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="fer-lightning checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the throughput measurement")
    parser.add_argument("--iters", type=int, default=300, help="timed batch-1 calls")
    parser.add_argument("--repeats", type=int, default=10, help="timed full-batch calls")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> list[dict]:
    """Export, check and time every runtime, print the table; returns its rows."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        runners = build_runners(args.ckpt, Path(workdir), args.threads)
        shape = input_shape(load_module(args.ckpt))
        rows = measure(runners, shape, args)
    import onnxruntime

    env = {
        "checkpoint": str(args.ckpt),
        "input": [1, *shape],
        "threads": args.threads,
        "cpu": f"{cpu_name()}, {visible_cores()} cores visible",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    print(f"{env}\n\n{markdown(rows, args.batch)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    return rows


main = console_script(run)


if __name__ == "__main__":
    main()

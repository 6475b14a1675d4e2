"""Pack a training checkpoint into a small weights-only file for the `weights/` folder, and print its sha256.

    fer-pack-weights logs/.../checkpoints/best.ckpt weights/mini_xception_cpu_fast.ckpt [--half]
    (python -m fer_lightning.tools.weights)

A Lightning checkpoint also holds the optimizer state (Adam: two more copies of every weight), the loops, the
callbacks and the RNG states; eval.py, predict.py and export.py need only `state_dict` and `hyper_parameters`
(the model config and preprocessing `fer_lightning.checkpoint.load_module` rebuilds the model from). `--half`
stores the floating-point weights in fp16, halving the file again; loading copies them back into fp32 parameters,
so a half file evaluates slightly differently from its source: report the number `eval.py` gives on the file itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fer_lightning.checkpoint import read_checkpoint, save_checkpoint
from fer_lightning.data.formats.fer2013 import file_sha256 as sha256
from fer_lightning.errors import exit_on_user_error

# hparams that describe the training run, not the model: kept out so the file is the same from any machine
RUN_ONLY_HPARAMS = ("distill",)


def weights_only(checkpoint: dict, half: bool = False) -> dict:
    """The `state_dict` and `hyper_parameters` of a fer-lightning checkpoint, fp16 floats when `half`; metric
    states (torchmetrics buffers, not weights) are dropped, they are rebuilt empty on load."""
    state = {
        key: value.half() if half and value.is_floating_point() else value.clone()
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(("net.", "input_"))
    }
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in RUN_ONLY_HPARAMS}
    return {
        "state_dict": state,
        "hyper_parameters": hparams,
        "epoch": checkpoint.get("epoch", 0),
        "global_step": checkpoint.get("global_step", 0),
    }


def pack(source: str | Path, destination: str | Path, half: bool = False) -> dict:
    """Write the weights-only file; returns what its README row needs (path, bytes, sha256)."""
    path = save_checkpoint(weights_only(read_checkpoint(source), half), destination)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-pack-weights", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a fer-lightning training checkpoint (best.ckpt, last.ckpt)")
    parser.add_argument("output", help="the weights-only file to write")
    parser.add_argument("--half", action="store_true", help="store floating-point weights in fp16")
    args = parser.parse_args(argv)
    with exit_on_user_error():  # a missing or unsafe checkpoint: one message, exit status 2
        packed = pack(args.checkpoint, args.output, args.half)
    print(f"{packed['path']}: {packed['bytes'] / 1e6:.2f} MB, sha256 {packed['sha256']}")


if __name__ == "__main__":
    main()

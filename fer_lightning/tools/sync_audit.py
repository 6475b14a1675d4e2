"""Host-device synchronisations per call of the GPU path's per-step pieces (`python -m fer_lightning.tools.sync_audit`,
a step of `make gpu-check`): the device augmentation, Mixup, the training accuracy, the eval metrics and eval loss.

Each piece is called once to warm up, then once under `torch.cuda.set_sync_debug_mode("warn")`, which warns at
every operation that makes the host wait for the GPU; the warnings are counted. Zero is the goal for anything that
runs every step: one sync per step is enough to keep the CPU from queuing the next step while the GPU runs this
one. Prints `name<TAB>syncs<TAB>ms` rows (ms: the mean time of a call, 50 calls). Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch

NO_CUDA = "sync audit: no CUDA device (torch {}), nothing to audit"


def syncs_per_call(fn: Callable[[], object]) -> int:
    """CPU-GPU synchronisations in one call of `fn`, by torch's sync debug mode (after a warm-up call)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def ms_per_call(fn: Callable[[], object], calls: int = 50) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / calls


def pieces(batch: int, num_classes: int = 7) -> dict[str, Callable[[], object]]:
    """The per-step calls of a training / eval step on CUDA, at FER2013's shapes."""
    import hydra
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy

    from fer_lightning.config import compose
    from fer_lightning.data.mixup import MixupCutmix
    from fer_lightning.lit_module import eval_metrics

    augment = hydra.utils.instantiate(compose("train", ["aug=heavy"], output_dir=".").aug.device).cuda()
    images = torch.randint(0, 256, (batch, 1, 48, 48), dtype=torch.uint8, device="cuda")
    targets = torch.randint(0, num_classes, (batch,), device="cuda")
    logits = torch.randn(batch, num_classes, device="cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    accuracy = MulticlassAccuracy(num_classes, average="micro").cuda()
    metrics, mix = eval_metrics(num_classes).cuda(), MixupCutmix(num_classes, mixup_alpha=0.2, cutmix_alpha=1.0)
    loss_mean, floats = MeanMetric(nan_strategy="disable").cuda(), images.float()
    return {
        "device aug (heavy)": lambda: augment(images, generator),
        "mixup / cutmix": lambda: mix(floats, targets),
        "train accuracy update": lambda: accuracy(logits, targets),
        "eval metrics update": lambda: metrics.update(logits, targets),
        "eval loss update": lambda: loss_mean.update(logits.sum().expand(batch)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA.format(torch.__version__))
        return 0
    for name, fn in pieces(args.batch).items():
        print(f"{name}\t{syncs_per_call(fn)}\t{ms_per_call(fn):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed settings per model and machine: `precision: auto`, and an autotune that times the settings left at auto.

Why measure: the fastest precision and memory layout differ by model and by machine. On the 2-core AVX512-BF16
CPU of the development box a bare training step of mini_Xception ran 461 img/s in fp32 NCHW, 741 fp32 channels_last,
611 bf16 NCHW and 984 bf16 channels_last; ResNet-18 17 / 20 / 40 / 47; VGG-13 was fastest in fp32 channels_last
(issue 14). So, like `cudnn.benchmark` one level up, `speed.autotune=true` times a few training steps of each
candidate on a copy of the model, at the run's batch shape, before the Trainer is built, and the run takes the
fastest. Only settings the user left at `auto` are searched: `trainer.precision: auto`,
`callbacks.channels_last.enabled: auto` and, when asked, `torch.compile`; a pinned value is kept as written.

The trial steps run on a deep copy of the network under `torch.random.fork_rng`, so the run's weights and random
streams are exactly those of a run without the autotune: the choice changes results by bf16's rounding only.
"""

from __future__ import annotations

import copy
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

FP32, BF16 = "32-true", "bf16-mixed"
SPEED_RECORD = "speed.json"  # in the run directory: the autotune's measurements and choice
Clock = Callable[[], float]


# ----- precision: auto ---------------------------------------------------------------------------------------
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (x86 `flags`, ARM `Features`); empty where unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """bf16 that the hardware computes natively: CUDA's own check; on x86 the AVX512-BF16 or AMX-BF16 dot-product
    instructions, on ARM the BF16 extension. Without them oneDNN emulates bf16 in fp32 and is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str | int, device: torch.device) -> str | int:
    """`auto` -> bf16-mixed where bf16 is native (CUDA, AVX512-BF16 / AMX CPUs), 32-true elsewhere; any other
    value (Lightning's own precision names) unchanged."""
    if precision != "auto":
        return precision
    return BF16 if native_bf16(device) else FP32


def eval_precision(precision: str | int, trained: Sequence[str | None]) -> str | int:
    """The precision to evaluate checkpoints in: an explicit value as given; `auto` the precision they were trained
    in (stored in the checkpoint), so that eval reproduces the run's own val/test numbers on any machine; fp32 where
    members of an ensemble differ or a checkpoint does not say."""
    if precision != "auto":
        return precision
    kinds = set(trained)
    return kinds.pop() if len(kinds) == 1 and None not in kinds else FP32


def trainer_device(accelerator: str) -> torch.device:
    """The device Lightning's `accelerator` setting will train on (rank 0's): CUDA first for `auto`, as Lightning."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def set_matmul_precision(device: torch.device, precision: str | None) -> bool:
    """`speed.matmul_precision` ('high': float32 matmuls on TF32 tensor cores) on CUDA; True when it was set. Not on
    the CPU: there torch's setting also lets oneDNN compute float32 matmuls in bf16 ('medium'), a numerics change the
    autotune does not time. null leaves torch's default ('highest', plain fp32)."""
    if device.type != "cuda" or not precision:
        return False
    torch.set_float32_matmul_precision(precision)
    return True


def channels_last_crash_risk(net: nn.Module | None, device: torch.device, batch_size: int) -> bool:
    """True where a channels_last training step can corrupt the heap: on the CPU, oneDNN 3.x's kernels for a 1x1
    stride>1 convolution with few input channels (mini_Xception's shortcuts) do so. Measured with torch 2.13.0+cpu
    (experiments/repro/channels_last_crash.py): on AVX-512 the backward-weights kernel for an odd minibatch with
    < 16 input channels, from 2 threads on; on an AVX2-only CPU the backward-data kernel (`brgconv_strided:avx2`)
    for < 8 input channels at any batch and thread count (1-7 crash, 8-20 pass). `net=None` (the model not known
    yet) counts as mini_Xception's 8-channel shortcut: every odd batch is a risk."""
    if device.type != "cpu":
        return False
    narrow = [8] if net is None else [
        m.in_channels
        for m in net.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 16
    ]  # fmt: skip
    return any(channels < 8 or batch_size % 2 == 1 for channels in narrow)


# ----- timing ----------------------------------------------------------------------------------------------
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
    clock: Clock = time.perf_counter,
) -> float:
    """Images/s of `steps` training steps (forward inside `step_loss`, backward, optimizer step) after `warmup`
    untimed ones, which pay for the allocator, oneDNN/cuDNN kernel choice and torch.compile."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 to time anything, got {steps}")
    start = clock()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = clock()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return steps * images_per_step / max(clock() - start, 1e-9)


# ----- the autotune ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedSetting:
    precision: str = FP32
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{'bf16' if self.precision == BF16 else 'fp32'} {layout}{' compiled' if self.compile else ''}"


@dataclass
class AutotuneResult:
    choice: SpeedSetting
    images_per_s: dict[str, float] = field(default_factory=dict)
    batch_shape: tuple[int, ...] = ()
    device: str = "cpu"

    def as_dict(self) -> dict:
        return {
            "choice": asdict(self.choice) | {"label": self.choice.label},
            "images_per_s": self.images_per_s,
            "batch_shape": list(self.batch_shape),
            "device": self.device,
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }


def candidate_settings(
    precision: str | int,
    channels_last: bool | str,
    try_compile: bool,
    device: torch.device,
    batch_size: int = 64,
    net: nn.Module | None = None,
) -> list[SpeedSetting]:
    """Every combination of the settings left at auto; bf16 only where it is native (emulated bf16 is slower than
    fp32, not worth a trial), channels_last only where it cannot crash (`channels_last_crash_risk`: never for a
    model (`net`) and batch that hit oneDNN's CPU crash, where a short timing could pass and the run die later).
    The first candidate is the one a run without the autotune would take."""
    if precision == "auto":
        precisions = [FP32, BF16] if native_bf16(device) else [FP32]
        precisions.sort(key=lambda p: p != resolve_precision("auto", device))
    else:
        precisions = [precision]
    layouts = [device.type == "cuda", device.type != "cuda"] if channels_last == "auto" else [bool(channels_last)]
    if channels_last == "auto" and channels_last_crash_risk(net, device, batch_size):
        layouts = [False]
    compiles = [False, True] if try_compile else [False]
    return [SpeedSetting(p, c, k) for p in precisions for c in layouts for k in compiles]


def time_setting(
    net: nn.Module,
    setting: SpeedSetting,
    batch_shape: Sequence[int],
    num_classes: int,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> float:
    """Training images/s of `setting` on a copy of `net`: random inputs of `batch_shape`, the run's optimizer."""
    model = copy.deepcopy(net).to(device).train()
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if setting.compile else model
    optimizer = optimizer_factory(params=model.parameters())
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(*batch_shape, generator=generator).to(device)
    targets = torch.randint(0, num_classes, (batch_shape[0],), generator=generator).to(device)

    def step_loss() -> torch.Tensor:
        return F.cross_entropy(forward(inputs).float(), targets)  # the loss in fp32, as the LitModule's

    return train_step_images_per_s(
        step_loss, optimizer, batch_shape[0], steps, warmup, device, setting.precision == BF16, clock
    )


def autotune(
    net: nn.Module,
    candidates: Sequence[SpeedSetting],
    batch_shape: Sequence[int],
    num_classes: int,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> AutotuneResult:
    """Time every candidate and keep the fastest (the earlier candidate on a tie). A candidate that raises is
    reported and skipped, so a setting this machine cannot run is never chosen."""
    if not candidates:
        raise ValueError("autotune needs at least one candidate setting")
    rates: dict[str, float] = {}
    errors: list[Exception] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for setting in candidates:
            try:
                rates[setting.label] = time_setting(
                    net, setting, batch_shape, num_classes, optimizer_factory, device, steps, warmup, clock
                )
            except Exception as error:  # noqa: BLE001 - any failure rules the setting out, the run goes on
                errors.append(error)
                log.warning(
                    "speed autotune: %s failed (%s: %s); not a candidate", setting.label, type(error).__name__, error
                )
    timed = [s for s in candidates if s.label in rates]
    if not timed:
        # the config's own error (an optimizer's invalid lr, a model that cannot take the input), not the autotune's
        raise errors[0]
    choice = max(timed, key=lambda s: (rates[s.label], -timed.index(s)))
    return AutotuneResult(choice, rates, tuple(batch_shape), str(device))


# ----- the run's config ------------------------------------------------------------------------------------
def single_device(trainer_cfg) -> bool:
    """One process on one device: the only case where one timing decides for the whole run (under DDP every rank
    would time on its own and could choose differently)."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    return nodes == 1 and (devices in (1, "1") or (isinstance(devices, Sequence) and len(devices) == 1))


def settle_speed_settings(cfg, net: nn.Module, clock: Clock = time.perf_counter) -> AutotuneResult | None:
    """Replace `auto` in trainer.precision and callbacks.channels_last.enabled by concrete values, in place:
    measured when `speed.autotune` is on and one process trains, else by the rules of `resolve_precision` and
    `ChannelsLast`. Returns the autotune's measurement (None when nothing was timed)."""
    speed = cfg.get("speed") or {}
    device = trainer_device(cfg.trainer.get("accelerator", "auto"))
    set_matmul_precision(device, speed.get("matmul_precision"))  # before the timing, so that it times the same math
    layout_node = (cfg.get("callbacks") or {}).get("channels_last")
    channels_last = layout_node.enabled if layout_node is not None else False
    candidates = candidate_settings(
        cfg.trainer.precision, channels_last, speed.get("try_compile", False), device, cfg.data.batch_size, net
    )
    result = None
    # a fast_dev_run checks a config in one batch: timing every setting first would take longer than the run
    timing_wanted = speed.get("autotune", False) and not cfg.trainer.get("fast_dev_run")
    if timing_wanted and len(candidates) > 1 and single_device(cfg.trainer):
        shape = (cfg.data.batch_size, cfg.data.in_chans, *(2 * [cfg.data.get("crop_size") or cfg.data.image_size]))
        optimizer_factory = _instantiate(cfg.optimizer)
        result = autotune(
            net, candidates, shape, cfg.data.num_classes, optimizer_factory, device,
            speed.get("steps", 3), speed.get("warmup", 1), clock,
        )  # fmt: skip
        choice = result.choice
        rates = ", ".join(f"{label} {rate:.0f}" for label, rate in result.images_per_s.items())
        log.info("speed autotune on %s, batch %s (training img/s): %s -> %s", device, shape, rates, choice.label)
    else:
        choice = candidates[0]
    apply_speed_setting(cfg, choice)
    return result


def apply_speed_setting(cfg, setting: SpeedSetting) -> None:
    """Write `setting` into the run's config: trainer.precision, the channels_last callback, module.compile."""
    from omegaconf import open_dict

    layout_node = (cfg.get("callbacks") or {}).get("channels_last")
    with open_dict(cfg):
        cfg.trainer.precision = setting.precision
        if layout_node is not None:
            layout_node.enabled = setting.channels_last
        if setting.compile:
            cfg.module.compile = True


def _instantiate(node):
    import hydra

    return hydra.utils.instantiate(node)

"""Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531): a student trained on the hard labels and
on a frozen teacher's (or an ensemble's) temperature-softened probabilities.

    loss = (1 - weight) * hard_loss + weight * T^2 * KL(q_T || softmax(student_logits / T))

with q_T the teachers' mean of softmax(teacher_logits / T). The T^2 keeps the soft term's gradients on the scale of
the hard term's as T changes (the paper, section 2). `python train.py distill=kd 'distill.teachers=[best.ckpt]'`.

The teacher logits are computed on the fly, on exactly the student's input: the same augmented view, the same
Mixup/CutMix mixture, the same crop. Precomputing them once per image would be exact only without random
augmentation, so it is not offered. The teachers are held outside the module's `nn.Module` tree: they are not in the
student's checkpoint, get no gradient, are not switched to train mode by Lightning, and are not seen by the
optimizer. Each teacher is fed with its own normalisation: the student's normalised input `x = (u - m_s) / s_s` is
mapped to `(u - m_t) / s_t` exactly, an affine map that commutes with Mixup's and CutMix's mixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.checkpoint import load_module
from fer_lightning.errors import UserError


def soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """An ensemble's soft targets: the mean over teachers of softmax(logits / T), in fp32."""
    return torch.stack([F.softmax(logits.float() / temperature, dim=-1) for logits in teacher_logits]).mean(0)


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(targets || softmax(student_logits / T)), averaged over the batch (KL's `batchmean`)."""
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_probs, targets, reduction="batchmean") * temperature**2


def is_channels_last(net: nn.Module) -> bool:
    """Whether the network's convolutions are stored NHWC (what the ChannelsLast callback does to the student); read
    on the first weight with several input channels and a spatial kernel, where the two layouts differ in strides."""
    weight = next((p for p in net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1), None)
    return weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


class Distillation:
    """Frozen teachers loaded from fer-lightning checkpoints, and the loss that mixes their soft targets in."""

    def __init__(self, teachers: Sequence[str | Path | nn.Module], temperature: float = 4.0, weight: float = 0.9):
        if isinstance(teachers, (str, Path)):
            teachers = [teachers]
        if not teachers:
            raise UserError("distill.teachers: expected one or more teacher checkpoint paths, got none")
        if not temperature > 0:
            raise UserError(f"distill.temperature must be > 0, got {temperature}")
        if not 0.0 <= weight <= 1.0:
            raise UserError(f"distill.weight must be in [0, 1], got {weight}")
        self.temperature, self.weight = float(temperature), float(weight)
        self.paths = [str(t) if not isinstance(t, nn.Module) else type(t).__name__ for t in teachers]
        self.teachers = [load_module(t) if not isinstance(t, nn.Module) else t for t in teachers]
        for teacher in self.teachers:
            teacher.eval().requires_grad_(False)
        self._placed: tuple[torch.device, bool] | None = None

    def hparams(self) -> dict:
        """Plain values for the student's hparams (the teachers' weights never enter its checkpoint)."""
        return {"teachers": self.paths, "temperature": self.temperature, "weight": self.weight}

    def check_compatible(self, class_names: Sequence[str], preprocessing: dict) -> None:
        """A teacher must predict the student's classes, in its order, from inputs of the student's shape."""
        for path, teacher in zip(self.paths, self.teachers, strict=True):
            names = list(teacher.hparams.class_names)
            if names != list(class_names):
                raise UserError(
                    f"distill teacher {path} predicts classes {names}, the student's data has {list(class_names)}"
                )
            theirs = teacher.hparams.get("preprocessing") or {}
            for key in ("in_chans", "crop_size", "image_size"):
                if key in theirs and key in preprocessing and theirs[key] != preprocessing[key]:
                    raise UserError(
                        f"distill teacher {path} was trained with {key}={theirs[key]}, the student's data has "
                        f"{key}={preprocessing[key]}: the teacher must see inputs like those it was trained on"
                    )

    def place(self, device: torch.device, student: nn.Module) -> None:
        """Move the teachers to the student's device and memory layout (once; again only if either changes)."""
        channels_last = is_channels_last(student)
        if self._placed == (device, channels_last):
            return
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for teacher in self.teachers:
            teacher.to(device=device, memory_format=layout)
        self._placed = (device, channels_last)

    @torch.no_grad()
    def targets(self, inputs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Soft targets for the student's normalised `inputs` ((N, C, H, W), or (N, V, C, H, W) views, averaged
        over V as the student's forward does); `mean` / `std` are the student's normalisation."""
        # back to [0, 1] pixels (the (1, C, 1, 1) statistics broadcast over views too); a teacher's own forward
        # normalises them with its statistics and averages view batches, as for the student
        pixels = inputs * std + mean
        logits = [teacher(pixels) for teacher in self.teachers]
        return soft_targets(logits, self.temperature)

    def loss(self, hard_loss: torch.Tensor, student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        soft_loss = distillation_loss(student_logits, targets, self.temperature)
        return (1.0 - self.weight) * hard_loss + self.weight * soft_loss

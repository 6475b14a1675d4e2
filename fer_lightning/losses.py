"""Cross-entropy for class indices and for soft targets (Mixup/CutMix mixtures, FER+ vote distributions)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices: unchanged for indices (N,), the argmax of probability vectors (N, K) (what metrics count)."""
    return targets.argmax(-1) if targets.is_floating_point() else targets


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean of -sum_k q_k log p_k over the batch, for targets q given as indices (N,) or probabilities (N, K).

    With class weights w the batch mean is weighted by each sample's target weight sum_k w_k q_k (taken before label
    smoothing), which for indices is exactly `F.cross_entropy(weight=w)`; the same normalisation then holds for
    Mixup mixtures, so the loss scale does not change when Mixup is switched on.
    """
    num_classes = logits.shape[-1]
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(
                f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
        probs = targets.to(logits.dtype)
    else:
        probs = F.one_hot(targets, num_classes).to(logits.dtype)
    sample_weight = None if weight is None else probs @ weight.to(logits.dtype)
    if label_smoothing > 0:
        probs = probs * (1.0 - label_smoothing) + label_smoothing / num_classes
    class_weight = 1.0 if weight is None else weight.to(logits.dtype)
    per_sample = -(probs * class_weight * F.log_softmax(logits, dim=-1)).sum(-1)
    return per_sample.mean() if sample_weight is None else per_sample.sum() / sample_weight.sum()

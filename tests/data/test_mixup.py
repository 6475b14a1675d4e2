"""Mixup / CutMix and the soft-target loss: hand-computed values, validation, the LitModule's training step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.data.mixup import MixupCutmix, paste_box
from fer_lightning.lit_module import FERLitModule
from fer_lightning.losses import hard_targets, soft_cross_entropy


def test_soft_loss_against_a_hand_computed_value() -> None:
    logits = torch.log(torch.tensor([[1.0, 3.0]]))  # softmax = [0.25, 0.75]
    targets = torch.tensor([[0.4, 0.6]])
    expected = -(0.4 * math.log(0.25) + 0.6 * math.log(0.75))  # 0.727127
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.727127, abs=1e-6)


def test_mixup_loss_of_two_samples_by_hand() -> None:
    mix = MixupCutmix(num_classes=3, mixup_alpha=1.0)
    images = torch.tensor([[[[0.0]]], [[[1.0]]]])  # (2, 1, 1, 1)
    mixed, targets = mix.mix(images, torch.tensor([0, 2]), lam=0.7, cutmix=False)
    assert mixed.flatten().tolist() == pytest.approx([0.3, 0.7])  # 0.7 x itself + 0.3 x the previous sample
    torch.testing.assert_close(targets, torch.tensor([[0.7, 0.0, 0.3], [0.3, 0.0, 0.7]]))
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    expected = -(0.7 * math.log(0.5) + 0.3 * math.log(0.25) + 0.3 * math.log(0.2) + 0.7 * math.log(0.6)) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_index_targets_match_torch_cross_entropy(smoothing: float, weighted: bool) -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), torch.randint(0, 5, (8,))
    weight = torch.rand(5) + 0.5 if weighted else None
    expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(soft_cross_entropy(logits, targets, weight, smoothing), expected)
    one_hot = F.one_hot(targets, 5).float()  # the same targets as probabilities give the same loss
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot, weight, smoothing), expected)


def test_cutmix_target_weights_equal_the_pasted_area() -> None:
    torch.manual_seed(3)
    images = torch.stack([torch.zeros(1, 10, 10), torch.ones(1, 10, 10)])
    mixed, lam = paste_box(images, images.roll(1, 0), lam=0.64)
    assert 0.0 < lam < 1.0
    assert mixed[1].mean().item() == pytest.approx(lam)  # share of the sample's own (ones) pixels
    mix = MixupCutmix(num_classes=2, cutmix_alpha=1.0)
    torch.manual_seed(3)
    mixed, targets = mix.mix(images, torch.tensor([0, 1]), lam=0.64, cutmix=True)
    assert targets[1, 1].item() == pytest.approx(mixed[1].mean().item())


def test_forward_draws_lambda_and_keeps_probabilities_summing_to_one() -> None:
    torch.manual_seed(0)
    mix = MixupCutmix(num_classes=7, mixup_alpha=0.4, cutmix_alpha=1.0)
    images, targets = mix(torch.rand(6, 1, 8, 8), torch.randint(0, 7, (6,)))
    assert images.shape == (6, 1, 8, 8)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


@pytest.mark.parametrize(
    ("images", "targets", "message"),
    [
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), "float batch"),
        (torch.zeros(2, 4, 4), torch.tensor([0, 1]), "float batch"),
        (torch.zeros(2, 1, 4, 4), torch.tensor([0, 3]), "class indices in 0..2"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 4), r"soft targets must be \(2, 3\)"),
    ],
)
def test_bad_inputs_are_rejected(images: torch.Tensor, targets: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixupCutmix(num_classes=3, mixup_alpha=0.2)(images, targets)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        MixupCutmix(num_classes=3, mixup_alpha=-1.0)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_training_step_mixes_and_weights_the_loss() -> None:
    module = FERLitModule(TinyNet(3), optimizer=torch.optim.SGD, num_classes=3, mixup_alpha=0.2, cutmix_alpha=1.0)
    module.class_weights = torch.tensor([1.0, 2.0, 3.0])
    module.log = lambda *args, **kwargs: None  # no trainer attached
    images, targets = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2, 1])
    loss = module.training_step((images, targets), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert module.net.head[1].weight.grad is not None
    assert "class_weights" not in module.state_dict()  # recomputed from the data in setup, also on resume


def test_hard_targets_of_soft_targets() -> None:
    assert hard_targets(torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]


@pytest.mark.gpu
def test_mixing_a_gpu_batch_never_waits_for_the_device() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    images, targets = torch.rand(8, 1, 48, 48, device="cuda"), torch.randint(0, 7, (8,), device="cuda")
    mix = MixupCutmix(num_classes=7, mixup_alpha=0.2, cutmix_alpha=1.0)
    torch.cuda.set_sync_debug_mode("error")  # a host sync raises
    try:
        for _ in range(8):
            mix(images, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")

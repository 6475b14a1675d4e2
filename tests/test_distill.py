"""Knowledge distillation: the loss by hand, the teachers frozen and outside the student's checkpoint, the teachers
fed exactly the student's input (its own normalisation, Mixup/CutMix mixtures, TTA views), and a run through
train.py's pipeline with `distill=kd`."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from torch.nn import functional as F

from fer_lightning.checkpoint import build_checkpoint, load_module, read_checkpoint, save_checkpoint
from fer_lightning.distill import Distillation, distillation_loss, soft_targets
from fer_lightning.lit_module import FERLitModule
from fer_lightning.losses import soft_cross_entropy
from fer_lightning.models import create_model
from fer_lightning.training import run_training
from tests.conftest import compose_train

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def teacher_checkpoint(path: Path, seed: int, mean: float = 0.5, std: float = 0.5, **extra) -> Path:
    torch.manual_seed(seed)
    config = {"name": "tiny_xception", "num_classes": len(extra.get("class_names", CLASSES)), "in_chans": 1}
    preprocessing = {"image_size": 48, "crop_size": None, "in_chans": 1, "mean": mean, "std": std}
    preprocessing["class_names"] = list(extra.get("class_names", CLASSES))
    net = create_model(**config)
    with torch.no_grad():  # untrained nets are near-uniform: spread the logits so that soft targets carry signal
        net.fc.weight.mul_(50.0)
    return save_checkpoint(build_checkpoint(net, config, preprocessing), path)


def student(distill: Distillation | None = None, seed: int = 0, **kwargs) -> FERLitModule:
    torch.manual_seed(seed)
    net = create_model("tiny_xception", num_classes=7, in_chans=1)
    return FERLitModule(net, optimizer=None, class_names=CLASSES, distill=distill, **kwargs)


def batch(size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 1, 48, 48), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 7, (size,), generator=generator)


def test_loss_is_hintons_kl_times_t_squared() -> None:
    student_logits, teacher_logits = torch.randn(5, 7), [torch.randn(5, 7), torch.randn(5, 7)]
    temperature = 3.0
    targets = soft_targets(teacher_logits, temperature)
    expected_targets = (F.softmax(teacher_logits[0] / 3, -1) + F.softmax(teacher_logits[1] / 3, -1)) / 2
    torch.testing.assert_close(targets, expected_targets)
    log_q = F.log_softmax(student_logits / 3, -1)
    by_hand = (targets * (targets.log() - log_q)).sum(-1).mean() * 9
    torch.testing.assert_close(distillation_loss(student_logits, targets, temperature), by_hand)
    assert distillation_loss(teacher_logits[0], F.softmax(teacher_logits[0] / 3, -1), 3.0).abs() < 1e-6


def test_weight_zero_is_the_hard_loss_and_weight_one_the_soft(tmp_path: Path) -> None:
    path = teacher_checkpoint(tmp_path / "t.ckpt", seed=5)
    images, labels = batch()
    plain = student().training_step((images, labels), 0)
    assert student(Distillation([path], weight=0.0)).training_step((images, labels), 0) == plain
    distill = Distillation([path], temperature=2.0, weight=1.0)
    module = student(distill)
    inputs = module.normalize(images)
    soft = distill.targets(inputs, module.input_mean, module.input_std)
    expected = distillation_loss(module.net(inputs), soft, 2.0) + module.net.regularization_loss()  # (its L2)
    torch.testing.assert_close(module.training_step((images, labels), 0), expected)
    assert (expected - plain).abs() > 1e-3  # the soft term is a different loss, not the hard one again


def test_teacher_frozen_and_not_in_the_students_tree(tmp_path: Path) -> None:
    distill = Distillation([teacher_checkpoint(tmp_path / "t.ckpt", seed=5)])
    teacher = distill.teachers[0]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = student(distill)
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    module.train()
    module.training_step(batch(), 0).backward()
    optimizer.step()
    assert not teacher.training, "Lightning's module.train() must not reach the teacher"
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert set(module.state_dict()) == set(student().state_dict())
    assert not any(p is q for p in module.parameters() for q in teacher.parameters())
    assert module.hparams["distill"] == {"teachers": [str(tmp_path / "t.ckpt")], "temperature": 4.0, "weight": 0.9}


def test_teachers_see_the_students_mixed_input_in_their_own_normalisation(tmp_path: Path) -> None:
    """Mixup and CutMix mix the student's normalised input; each teacher must get the same mixture of the same
    pixels, normalised with its own statistics."""
    paths = [teacher_checkpoint(tmp_path / "a.ckpt", 5, mean=0.3, std=0.2), teacher_checkpoint(tmp_path / "b.ckpt", 6)]
    distill = Distillation(paths)
    module = student(distill, mixup_alpha=1.0, cutmix_alpha=1.0)
    module.input_mean.fill_(0.45)
    module.input_std.fill_(0.25)
    seen = {}
    module.net.register_forward_hook(lambda _, args, out: seen.update(student=args[0].detach()))
    for name, teacher in zip("ab", distill.teachers, strict=True):
        teacher.net.register_forward_hook(lambda _, args, out, name=name: seen.update({name: args[0].detach()}))
    loss = module.training_step(batch(), 0)
    assert torch.isfinite(loss)
    pixels = seen["student"] * 0.25 + 0.45  # the mixture, back in [0, 1] pixel units
    torch.testing.assert_close(seen["a"], (pixels - 0.3) / 0.2)
    torch.testing.assert_close(seen["b"], (pixels - 0.5) / 0.5)


def test_view_batches_are_averaged_over_views_like_the_students_forward(tmp_path: Path) -> None:
    distill = Distillation([teacher_checkpoint(tmp_path / "t.ckpt", seed=5)], temperature=2.0)
    views = torch.randn(3, 4, 1, 40, 40)
    mean, std = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.5)
    teacher = distill.teachers[0]
    with torch.no_grad():
        per_view = teacher.net(views.flatten(0, 1)).view(3, 4, -1)  # teacher's own stats are 0.5 / 0.5 too
    torch.testing.assert_close(distill.targets(views, mean, std), F.softmax(per_view.mean(1) / 2.0, -1))


def test_teacher_follows_a_channels_last_student(tmp_path: Path) -> None:
    distill = Distillation([teacher_checkpoint(tmp_path / "t.ckpt", seed=5)])
    module = student(distill).to(memory_format=torch.channels_last)
    module.training_step(batch(), 0)
    weight = next(p for p in distill.teachers[0].parameters() if p.ndim == 4 and p.shape[1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()


def test_incompatible_teacher_and_bad_values_are_refused(tmp_path: Path) -> None:
    other = teacher_checkpoint(tmp_path / "other.ckpt", 5, class_names=[f"c{i}" for i in range(7)])
    with pytest.raises(ValueError, match=r"other\.ckpt predicts classes \['c0'"):
        Distillation([other]).check_compatible(CLASSES, {"in_chans": 1, "crop_size": None, "image_size": 48})
    path = teacher_checkpoint(tmp_path / "t.ckpt", 5)
    with pytest.raises(ValueError, match="crop_size=None, the student's data has crop_size=40"):
        Distillation([path]).check_compatible(CLASSES, {"in_chans": 1, "crop_size": 40, "image_size": 48})
    for kwargs, message in (({"temperature": 0}, "temperature must be > 0"), ({"weight": 1.5}, r"weight must be in")):
        with pytest.raises(ValueError, match=message):
            Distillation([path], **kwargs)
    with pytest.raises(ValueError, match="one or more teacher"):
        Distillation([])


def test_distill_kd_runs_the_train_pipeline_and_the_student_checkpoint_holds_no_teacher(
    fer_csv: Path, tmp_path: Path
) -> None:
    teacher = teacher_checkpoint(tmp_path / "teacher.ckpt", seed=5)
    overrides = [f"data.path={fer_csv}", "debug=limit", "logger=csv", "distill=kd", f"distill.teachers=[{teacher}]"]
    cfg = compose_train(overrides, tmp_path)
    assert isinstance(hydra.utils.instantiate(cfg.distill), Distillation)
    metrics = run_training(cfg)
    saved = read_checkpoint(metrics["best_checkpoint"])
    assert saved["hyper_parameters"]["distill"]["teachers"] == [str(teacher)]
    assert all(key.startswith(("net.", "input_", "train_acc", "val_", "test_")) for key in saved["state_dict"])
    assert len(saved["state_dict"]) == len(student().state_dict())
    assert isinstance(load_module(metrics["best_checkpoint"]), FERLitModule)  # loads as a plain model


def test_missing_teachers_is_named(tmp_path: Path) -> None:
    cfg = compose_train(["distill=kd"], tmp_path)
    with pytest.raises(Exception, match="teachers"):
        hydra.utils.instantiate(cfg.distill)


def test_hard_loss_unchanged_without_distill() -> None:
    images, labels = batch()
    module = student()
    expected = soft_cross_entropy(module.net(module.normalize(images)), labels) + module.net.regularization_loss()
    torch.testing.assert_close(module.training_step((images, labels), 0), expected)

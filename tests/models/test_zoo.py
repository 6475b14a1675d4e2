"""Every registered model, tested through the registry: a new family is covered by registering it.

Kept fast on a 2-core CPU: batch 2, no_grad where gradients are not tested, backward at 32x32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from fer_lightning.models import create_model, list_models, register_model
from fer_lightning.models.table import count_macs, markdown_table

MODELS = list_models()
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("in_chans", "num_classes"), [(1, 7), (3, 8)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_at_48_and_64(name: str, in_chans: int, num_classes: int) -> None:
    model = create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
    for size in (48, 64):
        with torch.no_grad():
            out = model(torch.randn(2, in_chans, size, size))
        assert out.shape == (2, num_classes), size
        assert torch.isfinite(out).all(), size


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = create_model(name, num_classes=7, in_chans=1).train()
    loss = F.cross_entropy(model(torch.randn(2, 1, 32, 32)), torch.tensor([0, 6]))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_is_deterministic_and_splits_into_features_and_head(name: str) -> None:
    model = create_model(name, num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        split = model.forward_head(features)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert torch.equal(model(x), out)
    torch.testing.assert_close(split, out)
    assert pre_logits.shape == (2, model.num_features)


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_changes_output_width(name: str) -> None:
    model = create_model(name, num_classes=7, in_chans=1).eval()
    model.reset_classifier(3)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 48, 48))
    assert out.shape == (2, 3)
    assert model.num_classes == 3
    assert model.get_classifier() is model.fc


@pytest.mark.parametrize("name", MODELS)
def test_config_exists_names_the_model_and_instantiates(name: str) -> None:
    path = CONF_DIR / f"{name}.yaml"
    assert path.is_file(), f"missing {path}"
    model_cfg = OmegaConf.load(path)
    assert model_cfg._target_ == "fer_lightning.models.create_model"
    assert model_cfg.name == name
    # Dataset facts come from the data group, never from the model config.
    raw = OmegaConf.to_container(model_cfg, resolve=False)
    assert raw["num_classes"] == "${data.num_classes}"
    assert raw["in_chans"] == "${data.in_chans}"
    cfg = OmegaConf.create({"data": {"num_classes": 8, "in_chans": 3}, "model": model_cfg})
    model = instantiate(cfg.model)
    assert model.num_classes == 8


def test_every_model_config_is_registered() -> None:
    stale = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem not in MODELS)
    assert not stale, f"configs for unregistered models: {stale}"


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @register_model(family="resnet", paper="none")
        def resnet18(num_classes: int = 7, in_chans: int = 1) -> nn.Module:
            return nn.Identity()

    assert type(create_model("resnet18", num_classes=7)).__name__ == "ResNet"


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        create_model("resnet19", num_classes=7)
    message = str(err.value)
    assert "Did you mean" in message
    assert all(name in message for name in MODELS)


# ---- exact parameter counts, derived by hand from the architectures ------------------------------------------
# Conventions: a conv has c_in*c_out*k*k weights (+ c_out bias only where noted); BN has 2c trainable parameters
# (its running mean/var are buffers: Keras' "non-trainable params"); a linear layer has c_in*c_out + c_out.


def bn(c: int) -> int:
    return 2 * c


def basic_block(c_in: int, c: int, stride: int = 1) -> int:
    """Two 3x3 convs with BN; a 1x1 conv + BN projection shortcut where the shape changes (option B)."""
    body = 9 * c_in * c + bn(c) + 9 * c * c + bn(c)
    return body + (c_in * c + bn(c) if stride != 1 or c_in != c else 0)


def resnet_expected(in_chans: int, widths: tuple[int, ...], depths: tuple[int, ...], num_classes: int) -> int:
    total = 9 * in_chans * widths[0] + bn(widths[0])  # 3x3 stem
    c_in = widths[0]
    for i, (c, depth) in enumerate(zip(widths, depths, strict=True)):
        total += basic_block(c_in, c, stride=2 if i else 1) + (depth - 1) * basic_block(c, c)
        c_in = c
    return total + c_in * num_classes + num_classes


def test_resnet18_matches_published_cifar_count() -> None:
    # stem 1,856 + stage1 147,968 + stage2 525,568 + stage3 2,099,712 + stage4 8,393,728 + fc 5,130
    expected = resnet_expected(3, (64, 128, 256, 512), (2, 2, 2, 2), 10)
    assert expected == 11_173_962  # kuangliu/pytorch-cifar ResNet18 (10 classes), the published CIFAR count
    assert n_trainable(create_model("resnet18", num_classes=10, in_chans=3)) == expected


def test_resnet20_count_is_option_a_plus_two_projections() -> None:
    # He et al. report 0.27M for ResNet-20 with option-A (parameter-free) shortcuts; exactly:
    #   stem 3*16*9 + 32 = 464; stage1 3 x (2*16*16*9 + 64) = 14,016;
    #   stage2 (16*32*9 + 32*32*9 + 128) + 2 x (2*32*32*9 + 128) = 51,072;
    #   stage3 (32*64*9 + 64*64*9 + 256) + 2 x (2*64*64*9 + 256) = 203,520; fc 64*10 + 10 = 650  ->  269,722.
    # Option B adds two 1x1 projections with BN: (16*32 + 64) + (32*64 + 128) = 2,752  ->  272,474.
    option_a = 464 + 14_016 + 51_072 + 203_520 + 650
    expected = option_a + (16 * 32 + bn(32)) + (32 * 64 + bn(64))
    assert option_a == 269_722
    assert expected == resnet_expected(3, (16, 32, 64), (3, 3, 3), 10) == 272_474
    assert n_trainable(create_model("resnet20", num_classes=10, in_chans=3)) == expected


def test_mini_xception_matches_keras_summary() -> None:
    # Arriaga et al.'s Keras `model.summary()` (7 classes, 1 channel): 58,423 total, 56,951 trainable.
    def module(c_in: int, c: int) -> int:  # 1x1 shortcut + BN, two separable convs (depthwise 3x3, pointwise) + BN
        return c_in * c + bn(c) + (9 * c_in + c_in * c) + bn(c) + (9 * c + c * c) + bn(c)

    base = 9 * 1 * 8 + bn(8) + 9 * 8 * 8 + bn(8)
    modules = module(8, 16) + module(16, 32) + module(32, 64) + module(64, 128)
    head = 9 * 128 * 7 + 7  # the biased 3x3 class conv
    assert base + modules + head == 56_951
    assert n_trainable(create_model("mini_xception", num_classes=7, in_chans=1)) == 56_951


# ---- options ----------------------------------------------------------------------------------------------------


def test_se_is_an_option_on_every_resnet() -> None:
    plain = create_model("resnet20", num_classes=7)
    gated = create_model("resnet20", num_classes=7, se=True).eval()
    assert n_trainable(gated) > n_trainable(plain)
    with torch.no_grad():
        assert gated(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    # One gate per BasicBlock of c channels: c -> c/16 -> c with biases, two blocks per stage of ResNet-18.
    gates = sum(2 * (c * (c // 16) + c // 16 + (c // 16) * c + c) for c in (64, 128, 256, 512))
    se_18 = n_trainable(create_model("se_resnet18", num_classes=7))
    assert se_18 == n_trainable(create_model("resnet18", num_classes=7, se=True))
    assert se_18 - n_trainable(create_model("resnet18", num_classes=7)) == gates


def test_mobilenet_v2_width_mult() -> None:
    half = create_model("mobilenet_v2", num_classes=7, width_mult=0.5).eval()
    assert n_trainable(half) < n_trainable(create_model("mobilenet_v2", num_classes=7))
    with torch.no_grad():
        assert half(torch.randn(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("name", ["simple_cnn", "resnet18", "densenet_cifar", "mobilenet_v2", "vgg11"])
def test_odd_input_size(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 45, 45)).shape == (1, 7)


# ---- the model table --------------------------------------------------------------------------------------------


def test_count_macs_is_half_the_flops() -> None:
    # A 3x3 conv 1 -> 2 channels on 48x48 (valid): 46*46 outputs x 2 channels x 9 multiply-adds each.
    assert count_macs(nn.Conv2d(1, 2, 3, bias=False)) == 46 * 46 * 2 * 9


def test_markdown_table_has_one_row_per_model() -> None:
    table = markdown_table(["tiny_xception", "resnet20"])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert "FLOPs / 2" in lines[0]
    params = resnet_expected(1, (16, 32, 64), (3, 3, 3), 7)
    assert any(line.startswith(f"| `resnet20` | resnet_cifar | {params:,} |") for line in lines)


# ---- compute knobs of the ResNet family -------------------------------------------------------------------------


def test_resnet_defaults_keep_the_published_models() -> None:
    # The count docs/model_zoo.md listed before the width / stem-stride options existed.
    default = create_model("resnet18", num_classes=7)
    assert n_trainable(default) == resnet_expected(1, (64, 128, 256, 512), (2, 2, 2, 2), 7) == 11_171_271
    explicit = create_model("resnet18", num_classes=7, width=1.0, stem_stride=1)
    assert {k: v.shape for k, v in explicit.state_dict().items()} == {
        k: v.shape for k, v in default.state_dict().items()
    }
    assert count_macs(explicit) == count_macs(default)


def test_resnet_width_rounds_every_stage_to_a_multiple_of_8() -> None:
    half = create_model("resnet18_w50", num_classes=7)
    assert n_trainable(half) == resnet_expected(1, (32, 64, 128, 256), (2, 2, 2, 2), 7)
    assert 0.24 < n_trainable(half) / n_trainable(create_model("resnet18", num_classes=7)) < 0.26
    cifar_half = create_model("resnet20", num_classes=7, width=0.5)
    assert n_trainable(cifar_half) == resnet_expected(1, (8, 16, 32), (3, 3, 3), 7)


def test_resnet_stem_stride_quarters_the_multiply_adds_and_keeps_the_weights() -> None:
    full, strided = create_model("resnet18", num_classes=7), create_model("resnet18_s2", num_classes=7)
    assert count_macs(full) / count_macs(strided) == pytest.approx(4, rel=0.01)
    full.load_state_dict(strided.state_dict())  # same names and shapes: checkpoints move between the two
    with torch.no_grad():
        assert strided.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 7)

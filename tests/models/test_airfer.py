"""The airfer family beyond what the registry-wide tests in test_zoo.py check: any size >= 32 px, channels_last,
the airbench initialisations (dirac convs, whitening stem) and the scaled head."""

from __future__ import annotations

import pytest
import torch

from fer_lightning.models import create_model, list_models
from fer_lightning.models.airfer import AirFER, conv3x3
from fer_lightning.models.table import count_macs

AIRFER = list_models("airfer")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_family_has_three_sizes_growing_in_parameters() -> None:
    assert AIRFER == ["airfer_l", "airfer_m", "airfer_s"]
    params = [sum(p.numel() for p in create_model(n, num_classes=7).parameters()) for n in AIRFER]
    assert params[2] < params[1] < params[0]


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", AIRFER)
def test_output_shape_at_any_size_from_32(name: str, in_chans: int) -> None:
    model = create_model(name, num_classes=7, in_chans=in_chans).eval()
    for size in (32, 40, 48, 64):
        with torch.no_grad():
            out = model(torch.randn(2, in_chans, size, size))
        assert out.shape == (2, 7), size
        assert torch.isfinite(out).all(), size


@pytest.mark.parametrize("name", AIRFER)
def test_channels_last_forward_equals_nchw(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        expected = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_mid_size_costs_what_a_2_core_cpu_affords() -> None:
    # Between mini_Xception (5.5M) and ResNet-18 (1,247M) multiply-adds at 48x48: the target band of issue 14.
    macs = count_macs(create_model("airfer_m", num_classes=7))
    assert 50e6 <= macs <= 300e6


def test_convs_start_as_identity_on_their_first_input_channels() -> None:
    conv = conv3x3(4, 8)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :4], x)


def test_whitening_init_decorrelates_patches() -> None:
    model = AirFER(in_chans=1)
    # Correlated "images": smooth noise, so neighbouring pixels share most of their variance.
    images = torch.nn.functional.avg_pool2d(torch.randn(64, 1, 51, 51), 4, stride=1)
    model.init_whitening_(images, eps=0.0)
    with torch.no_grad():
        out = model.stem(images)[:, :4].permute(0, 2, 3, 1).reshape(-1, 4)  # the positive half, bias is zero
    second_moment = out.T @ out / len(out)
    torch.testing.assert_close(second_moment, torch.eye(4), rtol=0, atol=1e-3)
    assert torch.equal(model.stem.weight[4:], -model.stem.weight[:4])


def test_head_is_bias_free_linear_scaled_by_one_ninth() -> None:
    model = create_model("airfer_s", num_classes=7).eval()
    assert model.fc.bias is None
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model(x), model.fc(features) / 9)


def test_residual_option_adds_a_third_conv_per_group() -> None:
    plain, residual = AirFER(), AirFER(residual=True)
    extra = sum(9 * c * c + 2 * c for c in (64, 256, 256))  # one 3x3 conv and its BN per group
    n_plain = sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in residual.parameters()) - n_plain == extra
    with torch.no_grad():
        assert residual.eval()(torch.randn(2, 1, 48, 48)).shape == (2, 7)

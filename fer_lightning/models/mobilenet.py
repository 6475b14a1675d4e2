"""MobileNet v1 and v2 with strides for small faces.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
(arXiv:1704.04861, 2017): a 3x3 conv then 13 depthwise-separable layers (Table 1).
Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018, arXiv:1801.04381):
inverted residual blocks with ReLU6 and a linear (no activation) projection (Table 2).

ImageNet downsamples 32x, which leaves a 48x48 face 2x2 before the last stage; following
kuangliu/pytorch-cifar (`models/mobilenet.py`, `models/mobilenetv2.py`) the stem conv has stride 1, and v2's
second stage (24 channels) too, so both networks downsample 16x for v1 and 8x for v2 (48 -> 3 and 48 -> 6).
Unlike kuangliu's v2, blocks follow the paper: ReLU6, no expansion conv when t = 1, and a residual only where
input and output shapes agree (kuangliu adds 1x1 conv shortcuts elsewhere).
"""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.models._base import FERNet, make_divisible
from fer_lightning.models._registry import register_model

V1_PAPER = "Howard et al. 2017, arXiv:1704.04861"
V2_PAPER = "Sandler et al. 2018, arXiv:1801.04381"

# v1 pointwise widths and depthwise strides after the 32-channel stem (Table 1, ImageNet strides kept).
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))

# v2 stages: expansion t, channels c, repeats n, first stride s (Table 2, with s = 1 in the 24-channel stage).
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_act(
    in_chans: int,
    out_chans: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    layers = [nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(out_chans))
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (carries the stride), then 1x1 pointwise conv, each with BN and ReLU."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__(
            conv_bn_act(in_chans, in_chans, 3, stride, groups=in_chans),
            conv_bn_act(in_chans, out_chans, 1),
        )


class InvertedResidual(nn.Module):
    """1x1 expand by t (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; residual when shapes agree."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_chans * expansion
        layers = [] if expansion == 1 else [conv_bn_act(in_chans, hidden, 1, act=nn.ReLU6)]
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn_act(hidden, out_chans, 1, act=None),
        ]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chans == out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.use_residual else self.body(x)


class MobileNetV1(FERNet):
    """3x3 stride-1 stem to 32 channels, 13 depthwise-separable layers, pooled linear head."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1) -> None:
        super().__init__()
        layers, chans = [conv_bn_act(in_chans, 32, 3)], 32
        for out_chans, stride in V1_LAYERS:
            layers.append(DepthwiseSeparable(chans, out_chans, stride))
            chans = out_chans
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MobileNetV2(FERNet):
    """3x3 stride-1 stem, inverted residual stages, 1x1 conv to 1280, pooled linear head."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, width_mult: float = 1.0) -> None:
        super().__init__()
        chans = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(in_chans, chans, 3, act=nn.ReLU6)]
        for expansion, width, repeats, first_stride in V2_STAGES:
            out_chans = make_divisible(width * width_mult)
            for i in range(repeats):
                layers.append(InvertedResidual(chans, out_chans, first_stride if i == 0 else 1, expansion))
                chans = out_chans
        # The paper keeps the last conv at 1280 for width multipliers below 1.
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        layers.append(conv_bn_act(chans, self.num_features, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="mobilenet", paper=V1_PAPER)
def mobilenet_v1(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MobileNetV1:
    return MobileNetV1(num_classes, in_chans, **kwargs)


@register_model(family="mobilenet", paper=V2_PAPER)
def mobilenet_v2(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MobileNetV2:
    return MobileNetV2(num_classes, in_chans, **kwargs)

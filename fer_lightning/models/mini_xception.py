"""mini_Xception and its smaller siblings.

Arriaga, Valdenegro-Toro, Ploeger, "Real-time Convolutional Neural Networks for Emotion and Gender
Classification" (arXiv:1710.07557, 2017); source: oarriaga/face_classification `src/models/cnn.py`
(`mini_XCEPTION`, `tiny_XCEPTION`, `simple_CNN`).

Keras semantics are kept where they change numbers, so that the authors' trained weights load exactly:
valid 3x3 convs in the base, TensorFlow "same" max-pooling (the extra pad goes after, not before),
BatchNorm epsilon 1e-3 and momentum 0.99 (torch momentum 0.01), and a bias only on the final conv.
The paper's L2 (0.01) is exposed as `regularization_loss()`: Keras' `SeparableConv2D` ignores the
`kernel_regularizer` argument the authors pass, so only the two base convs are penalised, as in their run.

`simple_cnn` is the paper's fully convolutional baseline (`simple_CNN`): pairs of biased 'same' convs with BN,
one ReLU per pair (none between the two convs, as written), 'same' 2x2 average pooling and dropout 0.5, then a
256-channel conv + BN whose output is classified, as in mini_Xception, by a 3x3 conv and global average pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.models._base import FERNet
from fer_lightning.models._registry import register_model

KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99 is torch momentum 0.01

PAPER = "Arriaga et al. 2017, arXiv:1710.07557"


def keras_bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def tf_same_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with TensorFlow's 'same' padding: total pad split with the odd pixel at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class SeparableConv2d(nn.Sequential):
    """Keras SeparableConv2D (depth multiplier 1, 'same' padding, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, in_chans, 3, padding=1, groups=in_chans, bias=False),
            nn.Conv2d(in_chans, out_chans, 1, bias=False),
        )


class XceptionModule(nn.Module):
    """Two separable convs and a same-padded max-pool, added to a strided 1x1 conv shortcut."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride=2, bias=False), keras_bn(out_chans))
        self.sep1 = SeparableConv2d(in_chans, out_chans)
        self.bn1 = keras_bn(out_chans)
        self.sep2 = SeparableConv2d(out_chans, out_chans)
        self.bn2 = keras_bn(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)
        x = F.relu(self.bn1(self.sep1(x)))
        x = self.bn2(self.sep2(x))
        return tf_same_max_pool(x) + residual


class ConvHeadNet(FERNet):
    """Arriaga et al.'s head: a 3x3 conv to classes *before* global average pooling, instead of a linear layer."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # Pre-logits are the pooled features, the same vector a linear head would see.
        if pre_logits:
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.flatten(F.adaptive_avg_pool2d(self.fc(x), 1), 1)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Conv2d(self.num_features, num_classes, 3, padding=1)


class MiniXception(ConvHeadNet):
    """Base of two valid 3x3 convs, residual separable modules, a 3x3 conv to classes, global average pooling."""

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        base_chans: int = 8,
        module_chans: tuple[int, ...] = (16, 32, 64, 128),
        l2: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.l2 = l2
        self.conv1 = nn.Conv2d(in_chans, base_chans, 3, bias=False)
        self.bn1 = keras_bn(base_chans)
        self.conv2 = nn.Conv2d(base_chans, base_chans, 3, bias=False)
        self.bn2 = keras_bn(base_chans)
        chans = (base_chans, *module_chans)
        self.blocks = nn.Sequential(*(XceptionModule(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)))
        self.num_features = chans[-1]
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.blocks(x)

    def regularization_loss(self) -> torch.Tensor:
        """Keras `l2(0.01)` on the base conv kernels: 0.01 * sum(w**2)."""
        return self.l2 * (self.conv1.weight.square().sum() + self.conv2.weight.square().sum())


class SimpleCNN(ConvHeadNet):
    """`simple_CNN`: four conv pairs with 7/5/3/3 kernels, each pair BN-ed, ReLU-ed once, average-pooled, dropped."""

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        kernels: tuple[int, ...] = (7, 5, 3, 3),
        last_chans: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width, kernel in zip(widths, kernels, strict=True):
            layers += [
                nn.Conv2d(in_chans, width, kernel, padding=kernel // 2),
                keras_bn(width),
                nn.Conv2d(width, width, kernel, padding=kernel // 2),
                keras_bn(width),
                nn.ReLU(inplace=True),
                # ceil_mode + no padding averages only the real pixels of a ragged edge: Keras 'same' pooling.
                nn.AvgPool2d(2, ceil_mode=True),
                nn.Dropout(dropout),
            ]
            in_chans = width
        # The original has no activation between this BN and the class conv.
        layers += [nn.Conv2d(in_chans, last_chans, 3, padding=1), keras_bn(last_chans)]
        self.features = nn.Sequential(*layers)
        self.num_features = last_chans
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="xception", paper=PAPER, default_input_size=64)
def mini_xception(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MiniXception:
    return MiniXception(num_classes, in_chans, **kwargs)


@register_model(family="xception", paper=PAPER, default_input_size=64)
def tiny_xception(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MiniXception:
    kwargs = {"base_chans": 5, "module_chans": (8, 16, 32, 64), **kwargs}
    return MiniXception(num_classes, in_chans, **kwargs)


@register_model(family="cnn", paper=PAPER, default_input_size=48)
def simple_cnn(num_classes: int = 7, in_chans: int = 1, **kwargs) -> SimpleCNN:
    return SimpleCNN(num_classes, in_chans, **kwargs)

"""VGG with batch normalisation, in its CIFAR/FER form.

Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015,
arXiv:1409.1556), configurations A/B/D/E (VGG-11/13/16/19) with BatchNorm after every conv as in torchvision's
`vgg*_bn`; adapted to small images as in kuangliu/pytorch-cifar `models/vgg.py`: the same five conv stacks and
max-pools, but a single linear classifier on the 512 pooled features instead of the 4096-4096 fully connected
layers, which at 48x48 would hold 90% of the parameters for a 1x1 feature map. Adaptive average pooling before
the classifier lets 64 px (2x2 after five pools) and other sizes >= 32 px work too.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.models._base import FERNet
from fer_lightning.models._registry import register_model

PAPER = "Simonyan & Zisserman 2015, arXiv:1409.1556"

# Conv widths per stack; each stack ends in a 2x2 max-pool (the paper's Table 1, columns A, B, D, E).
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def conv_stack(in_chans: int, widths: tuple[int, ...]) -> nn.Sequential:
    """3x3 conv + BN + ReLU per width, then a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_chans = width
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG(FERNet):
    """Five conv stacks with max-pools; global average pooling and one linear layer classify."""

    def __init__(self, stacks: tuple[tuple[int, ...], ...], num_classes: int = 7, in_chans: int = 1) -> None:
        super().__init__()
        blocks, chans = [], in_chans
        for widths in stacks:
            blocks.append(conv_stack(chans, widths))
            chans = widths[-1]
        self.features = nn.Sequential(*blocks)
        self.num_features = chans
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="vgg", paper=PAPER)
def vgg11(num_classes: int = 7, in_chans: int = 1, **kwargs) -> VGG:
    return VGG(CONFIGS["vgg11"], num_classes, in_chans, **kwargs)


@register_model(family="vgg", paper=PAPER)
def vgg13(num_classes: int = 7, in_chans: int = 1, **kwargs) -> VGG:
    return VGG(CONFIGS["vgg13"], num_classes, in_chans, **kwargs)


@register_model(family="vgg", paper=PAPER)
def vgg16(num_classes: int = 7, in_chans: int = 1, **kwargs) -> VGG:
    return VGG(CONFIGS["vgg16"], num_classes, in_chans, **kwargs)


@register_model(family="vgg", paper=PAPER)
def vgg19(num_classes: int = 7, in_chans: int = 1, **kwargs) -> VGG:
    return VGG(CONFIGS["vgg19"], num_classes, in_chans, **kwargs)

"""DenseNet-BC for small faces.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks" (CVPR 2017, arXiv:1608.06993):
DenseNet-BC, i.e. bottleneck layers (BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k) and transitions that
compress by 0.5 (BN-ReLU-1x1 conv, 2x2 average pool). Block depths and growth rates k are the paper's ImageNet
ones (Table 1; k = 48 for DenseNet-161). Small-input adaptation as in kuangliu/pytorch-cifar `models/densenet.py`:
the stem is one 3x3 stride-1 conv to 2k channels (no BN of its own: the first dense layer pre-activates it)
instead of the 7x7/2 conv, BN and max-pool, so a 48x48 face goes 48 -> 24 -> 12 -> 6 through the transitions.
`densenet_cifar` is kuangliu's small DenseNet-BC (the 121 layout with k = 12).
"""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.models._base import FERNet
from fer_lightning.models._registry import register_model

PAPER = "Huang et al. 2017, arXiv:1608.06993"


def bn_relu_conv(in_chans: int, out_chans: int, kernel: int) -> nn.Sequential:
    """The pre-activation composite function H of the paper."""
    return nn.Sequential(
        nn.BatchNorm2d(in_chans),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_chans, out_chans, kernel, padding=kernel // 2, bias=False),
    )


class DenseLayer(nn.Module):
    """Bottleneck layer: 1x1 to 4k channels, 3x3 to k, concatenated to its input."""

    def __init__(self, in_chans: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(bn_relu_conv(in_chans, 4 * growth, 1), bn_relu_conv(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class Transition(nn.Sequential):
    """Compression (1x1 conv) and 2x2 average pooling between dense blocks."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(bn_relu_conv(in_chans, out_chans, 1), nn.AvgPool2d(2))


class DenseNet(FERNet):
    """3x3 stem to 2k channels, dense blocks with compressing transitions, final BN-ReLU, pooled linear head."""

    def __init__(
        self,
        depths: tuple[int, ...],
        growth: int = 32,
        num_classes: int = 7,
        in_chans: int = 1,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        chans = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_chans, chans, 3, padding=1, bias=False)]
        for i, depth in enumerate(depths):
            for _ in range(depth):
                layers.append(DenseLayer(chans, growth))
                chans += growth
            if i < len(depths) - 1:
                out_chans = int(chans * compression)
                layers.append(Transition(chans, out_chans))
                chans = out_chans
        # Pre-activation layers leave the last block un-normalised; the paper adds BN-ReLU before pooling.
        layers += [nn.BatchNorm2d(chans), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="densenet", paper=PAPER)
def densenet121(num_classes: int = 7, in_chans: int = 1, **kwargs) -> DenseNet:
    return DenseNet((6, 12, 24, 16), 32, num_classes, in_chans, **kwargs)


@register_model(family="densenet", paper=PAPER)
def densenet169(num_classes: int = 7, in_chans: int = 1, **kwargs) -> DenseNet:
    return DenseNet((6, 12, 32, 32), 32, num_classes, in_chans, **kwargs)


@register_model(family="densenet", paper=PAPER)
def densenet201(num_classes: int = 7, in_chans: int = 1, **kwargs) -> DenseNet:
    return DenseNet((6, 12, 48, 32), 32, num_classes, in_chans, **kwargs)


@register_model(family="densenet", paper=PAPER)
def densenet161(num_classes: int = 7, in_chans: int = 1, **kwargs) -> DenseNet:
    return DenseNet((6, 12, 36, 24), 48, num_classes, in_chans, **kwargs)


@register_model(family="densenet", paper=PAPER)
def densenet_cifar(num_classes: int = 7, in_chans: int = 1, **kwargs) -> DenseNet:
    return DenseNet((6, 12, 24, 16), 12, num_classes, in_chans, **kwargs)

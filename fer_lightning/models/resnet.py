"""ResNets for small faces, with optional Squeeze-and-Excitation.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016, arXiv:1512.03385);
Hu, Shen, Sun, "Squeeze-and-Excitation Networks" (CVPR 2018, arXiv:1709.01507).

Two families share one class:
- `resnet18/34/50/101/152`: the ImageNet depths with four stages of 64-128-256-512 channels, adapted to 48x48
  inputs as in kuangliu/pytorch-cifar `models/resnet.py`: a 3x3 stride-1 stem and no max-pool, so the feature map
  goes 48 -> 24 -> 12 -> 6 instead of collapsing to 2x2. The Bottleneck strides on its 3x3 conv (the "v1.5"
  placement of torchvision and kuangliu; the paper strides on the first 1x1).
- `resnet20/32/44/56/110`: the paper's own CIFAR family (Sec. 4.2), 6n+2 layers in three stages of 16-32-64
  channels. Where the width changes the shortcut is a projection (1x1 conv + BN, the paper's option B) rather than
  the zero-padded identity (option A) of the paper's CIFAR runs: it is the same shortcut the four-stage models use,
  and costs 2,752 extra parameters on resnet20 (0.27M either way).

`se=True` adds a Squeeze-and-Excitation gate (reduction 16) on the residual branch before the addition, as in
the SE-ResNet modules of Hu et al. (Fig. 3).

Two knobs trade accuracy for compute on a CPU, both off by default so that every model and checkpoint is unchanged:
`width` scales every stage's channels (rounded to a multiple of 8, MobileNet's rule): parameters and multiply-adds
fall with its square. `stem_stride=2` puts the ImageNet stem's stride back on the 3x3 stem conv, so every feature
map is half as high and wide (48 -> 24 -> 12 -> 6 -> 3): a quarter of the multiply-adds for the same parameters.
`resnet18_s2` and `resnet18_w50` are the two ways to a quarter of ResNet-18's cost.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.models._base import FERNet, make_divisible
from fer_lightning.models._registry import register_model

PAPER = "He et al. 2016, arXiv:1512.03385"
SE_PAPER = "Hu et al. 2018, arXiv:1709.01507"


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, bottleneck MLP (as 1x1 convs), sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)  # the 16-channel CIFAR stage would otherwise get 0 units
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def projection(in_chans: int, out_chans: int, stride: int) -> nn.Module:
    """Option-B shortcut where the shape changes, identity elsewhere."""
    if stride == 1 and in_chans == out_chans:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chans))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR family)."""

    expansion = 1

    def __init__(self, in_chans: int, planes: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes) if se else nn.Identity()
        self.shortcut = projection(in_chans, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_chans: int, planes: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        out_chans = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chans, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_chans, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.se = SqueezeExcite(out_chans) if se else nn.Identity()
        self.shortcut = projection(in_chans, out_chans, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return F.relu(out + self.shortcut(x))


class ResNet(FERNet):
    """3x3 stem (stride 1 unless `stem_stride`), then one stage per width; every stage after the first halves the
    resolution. `width` multiplies every stage's channels."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, ...],
        widths: tuple[int, ...] = (64, 128, 256, 512),
        num_classes: int = 7,
        in_chans: int = 1,
        se: bool = False,
        width: float = 1.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(make_divisible(w * width) for w in widths)  # identity at width 1: all widths are 8k
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, chans = [], widths[0]
        for i, (depth, planes) in enumerate(zip(depths, widths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(chans, planes, stride, se=se))
                chans = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = chans
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(F.relu(self.bn1(self.conv1(x))))


def _resnet(
    block: type[BasicBlock | Bottleneck], depths: tuple[int, ...], num_classes: int, in_chans: int, **kw
) -> ResNet:
    return ResNet(block, depths, num_classes=num_classes, in_chans=in_chans, **kw)


def _cifar_resnet(n: int, num_classes: int, in_chans: int, **kw) -> ResNet:
    """He et al.'s 6n+2-layer CIFAR ResNet: n BasicBlocks per stage, 16-32-64 channels."""
    return ResNet(BasicBlock, (n, n, n), (16, 32, 64), num_classes=num_classes, in_chans=in_chans, **kw)


@register_model(family="resnet", paper=PAPER)
def resnet18(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **kwargs)


@register_model(family="resnet", paper=PAPER)
def resnet34(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", paper=PAPER)
def resnet50(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", paper=PAPER)
def resnet101(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", paper=PAPER)
def resnet152(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", paper=PAPER)
def resnet18_s2(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    """ResNet-18 with a stride-2 stem: ImageNet's early downsampling, a quarter of the multiply-adds."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **{"stem_stride": 2, **kwargs})


@register_model(family="resnet", paper=PAPER)
def resnet18_w50(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    """ResNet-18 at half width (32-64-128-256): a quarter of the parameters and multiply-adds."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **{"width": 0.5, **kwargs})


@register_model(family="resnet_cifar", paper=PAPER)
def resnet20(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _cifar_resnet(3, num_classes, in_chans, **kwargs)


@register_model(family="resnet_cifar", paper=PAPER)
def resnet32(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _cifar_resnet(5, num_classes, in_chans, **kwargs)


@register_model(family="resnet_cifar", paper=PAPER)
def resnet44(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _cifar_resnet(7, num_classes, in_chans, **kwargs)


@register_model(family="resnet_cifar", paper=PAPER)
def resnet56(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _cifar_resnet(9, num_classes, in_chans, **kwargs)


@register_model(family="resnet_cifar", paper=PAPER)
def resnet110(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _cifar_resnet(18, num_classes, in_chans, **kwargs)


@register_model(family="se_resnet", paper=SE_PAPER)
def se_resnet18(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **{"se": True, **kwargs})


@register_model(family="se_resnet", paper=SE_PAPER)
def se_resnet34(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, **{"se": True, **kwargs})


@register_model(family="se_resnet", paper=SE_PAPER)
def se_resnet50(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet:
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, **{"se": True, **kwargs})

"""airfer: airbench's CifarNet adapted to 48x48 grey faces, for accuracy per multiply-add on a CPU.

Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv:2404.00498, 2024); source:
KellerJordan/cifar10-airbench `airbench94.py` (`make_net`, `ConvGroup`, `Conv.reset_parameters`,
`init_whitening_conv`) and `airbench96.py` (the residual third conv). What is kept from it:
- a whitening-style stem: a 2x2 valid conv to 2 * in_chans * 4 channels with a bias, then GELU. airbench sets its
  filters from the training images (eigenvectors of the patch covariance, and their negatives) and freezes them;
  here the same init is `AirFER.init_whitening_(images)`, optional, and the filters stay trainable;
- few, wide groups of conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, so half the 3x3 convs run at the
  pooled resolution; widths (64, 256, 256) in airbench94, and `residual=True` adds airbench96's third conv with a
  residual over the last two;
- identity (dirac) init of the first in_chans filters of every 3x3 conv, an implicit residual at the start;
- a global max-pool and a bias-free linear classifier whose logits are scaled by 1/9.
What differs: BatchNorm keeps its affine weight (airbench freezes it at 1) and torch's default momentum, because
FER recipes here train for tens of epochs with Adam rather than 10 with tuned SGD.

Khaireddin & Chen, "Facial Emotion Recognition: State of the Art Performance on FER2013" (arXiv:2105.03588, 2021)
reach 73.28% single-network accuracy on FER2013 with a plain VGG variant: stages of two 3x3 conv-BN-ReLU and a
max-pool, 64 to 512 channels, no residuals. That plain, wide conv stacks suffice at 48x48 is the premise here.

Sizes, chosen by a bare training step measured on the 2-core development CPU (AVX512-BF16 and AMX-BF16; batch 64,
48x48, Adam, bf16 autocast + channels_last, the fastest setting for every model tried; noisy, other jobs shared it):
`airfer_s` (airbench94 at half width) ~1,300 img/s, `airfer_m` (airbench94's widths) ~550, `airfer_l` (airbench96's
residual third conv per group) ~400, against mini_Xception ~790 and ResNet-18 ~110. Width pays on this CPU: the
oneDNN/AMX kernels run 256-channel convs several times faster per multiply-add than narrow ones. Two alternatives
measured worse per multiply-add and are not registered: a fourth group at Khaireddin & Chen's widths
(64-128-256-512: 176M multiply-adds but slower than `airfer_m`'s 265M, its 2x2 maps keep the kernels idle) and
depthwise convs (mini_Xception's 5.5M multiply-adds train slower than `airfer_s`'s 69M).

At 48x48 the maps go 48 -> 47 (stem) -> 23 -> 11 -> 5, and the global pool makes any input >= 32 px work.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_lightning.models._base import FERNet, make_divisible
from fer_lightning.models._registry import register_model

PAPER = "Jordan 2024, arXiv:2404.00498; Khaireddin & Chen 2021, arXiv:2105.03588"


def conv3x3(in_chans: int, out_chans: int) -> nn.Conv2d:
    """Bias-free 'same' 3x3 conv whose first in_chans filters start as the identity (airbench's dirac init)."""
    conv = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_chans, out_chans)])
    return conv


class ConvGroup(nn.Module):
    """conv, 2x2 max-pool, BN, GELU, conv, BN, GELU; `residual` adds a third conv and a skip over the last two."""

    def __init__(self, in_chans: int, out_chans: int, residual: bool = False) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chans, out_chans)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_chans)
        self.conv2 = conv3x3(out_chans, out_chans)
        self.norm2 = nn.BatchNorm2d(out_chans)
        self.residual = residual
        if residual:
            self.conv3 = conv3x3(out_chans, out_chans)
            self.norm3 = nn.BatchNorm2d(out_chans)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pooling before BN and the activation: they then run on a quarter of the pixels, same result for max-pool.
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        out = self.act(self.norm2(self.conv2(x)))
        if not self.residual:
            return out
        return self.act(self.norm3(self.conv3(out)) + x)


class AirFER(FERNet):
    """Whitening-style 2x2 stem, one ConvGroup per width, global max-pool, scaled bias-free linear head."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 256, 256),
        num_classes: int = 7,
        in_chans: int = 1,
        width: float = 1.0,
        residual: bool = False,
        stem_kernel: int = 2,
        head_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        stem_chans = 2 * in_chans * stem_kernel**2  # each whitening filter and its negative
        self.stem = nn.Conv2d(in_chans, stem_chans, stem_kernel, bias=True)
        nn.init.zeros_(self.stem.bias)
        groups, chans = [], stem_chans
        for w in widths:
            out_chans = make_divisible(w * width)
            groups.append(ConvGroup(chans, out_chans, residual))
            chans = out_chans
        self.groups = nn.Sequential(*groups)
        self.num_features = chans
        # A scale below 1 keeps the first logits small and slows the head relative to the body (airbench: 1/9).
        self.head_scale = head_scale
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.groups(F.gelu(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x) * self.head_scale

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=False)

    @torch.no_grad()
    def init_whitening_(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """airbench's data-dependent stem: filters = eigenvectors of the (uncentred) covariance of the k x k
        patches of `images`, scaled by 1/sqrt(eigenvalue + eps), and their negatives. `images` must be
        normalised as the network sees them; a few thousand are enough."""
        k = self.stem.kernel_size[0]
        chans = images.shape[1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, chans * k * k)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        filters = filters.flip(0).reshape(-1, chans, k, k)  # largest eigenvalue first, as airbench
        self.stem.weight.copy_(torch.cat([filters, -filters]))


@register_model(family="airfer", paper=PAPER)
def airfer_s(num_classes: int = 7, in_chans: int = 1, **kwargs) -> AirFER:
    """airbench94 at half width (32-128-128)."""
    return AirFER((64, 256, 256), num_classes, in_chans, **{"width": 0.5, **kwargs})


@register_model(family="airfer", paper=PAPER)
def airfer_m(num_classes: int = 7, in_chans: int = 1, **kwargs) -> AirFER:
    """airbench94's widths (64-256-256)."""
    return AirFER((64, 256, 256), num_classes, in_chans, **kwargs)


@register_model(family="airfer", paper=PAPER)
def airfer_l(num_classes: int = 7, in_chans: int = 1, **kwargs) -> AirFER:
    """airbench94's widths with airbench96's residual third conv in every group (9 convs)."""
    return AirFER((64, 256, 256), num_classes, in_chans, **{"residual": True, **kwargs})

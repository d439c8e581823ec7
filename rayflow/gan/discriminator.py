"""Projection discriminator (Miyato & Koyama, 2018) with spectral norm on every weight.

D(x, y) = linear(h) + <embed(y), h>, h = sum-pooled ReLU features of residual down-blocks.
Projection (not concatenation) is what makes a conditional D informative about the label; SN
(Lipschitz control) plus hinge loss is the SN-GAN/BigGAN recipe the prototype found stable on CPU.
`label_embedding` is the CcGAN seam: any module mapping y to (N, feature_dim(...)); for float
labels (`num_classes=None`) build it with `label_embed.projection_embedding` (<W h(y), phi(x)>).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm

from ..models.base import channels_last
from .generator import spatial_plan


def _sn(m: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)
    return spectral_norm(m)


class DBlock(nn.Module):
    """[ReLU]-conv-ReLU-conv-[avgpool] + (1x1 conv-[avgpool]) shortcut; `first` = no pre-ReLU."""

    def __init__(self, in_ch: int, out_ch: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = _sn(nn.Conv2d(in_ch, out_ch, 1)) if (in_ch != out_ch or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            if self.first:  # SN-GAN "optimized" first block: pool before the 1x1 conv (cheaper)
                s = self.shortcut(F.avg_pool2d(x, 2) if self.down else x)
            else:
                s = self.shortcut(x)
                s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ProjectionDiscriminator(nn.Module):
    """D(x, y) -> logits (N,).

    Widths: down-blocks start at base/4 and double; the last (no-down) block, whose features
    meet the projection, has 2*base (28x28, base 64: 16@14 -> 32@7 -> 128@7). Narrow maps at high
    resolution halve the CPU cost of D versus SN-GAN's constant width (measured: 0.25 vs 0.47 s
    for fwd+bwd of 128 28x28 images, 1 thread) while keeping a wide projection.
    """

    @staticmethod
    def widths_for(image_size: int, base_channels: int) -> list[int]:
        _, n_down = spatial_plan(image_size)
        return [max(8, base_channels // 4 * 2 ** i) for i in range(n_down)] + [2 * base_channels]

    @classmethod
    def feature_dim(cls, image_size: int, base_channels: int = 64) -> int:
        """Output size a custom `label_embedding` must have."""
        return cls.widths_for(image_size, base_channels)[-1]

    def __init__(self, num_classes: int | None, in_channels: int = 1, image_size: int = 28,
                 base_channels: int = 64, label_embedding: nn.Module | None = None):
        super().__init__()
        if label_embedding is None and num_classes is None:
            raise ValueError("continuous labels (num_classes=None) need a label_embedding module")
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        w = self.widths_for(image_size, base_channels)
        self.widths = w
        blocks = [DBlock(in_channels, w[0], down=True, first=True)]
        blocks += [DBlock(w[i - 1], w[i], down=i < len(w) - 1) for i in range(1, len(w))]
        self.blocks = nn.Sequential(*blocks)
        self.linear = _sn(nn.Linear(w[-1], 1))
        if label_embedding is None:
            emb = nn.Embedding(num_classes, w[-1])
            nn.init.xavier_uniform_(emb.weight)
            label_embedding = spectral_norm(emb)
        self.label_embedding = label_embedding
        channels_last(self)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        e = self.label_embedding(y)
        if e.shape != h.shape:
            raise ValueError(f"label embedding gives {tuple(e.shape)}, D features are {tuple(h.shape)}")
        return self.linear(h).squeeze(1) + (e * h).sum(dim=1)

"""Class-conditional generator: BigGAN-style residual up-blocks with conditional BatchNorm.

Why this shape: nearest-upsample + 3x3 conv avoids the checkerboards of transposed convs; the
label enters through conditional BN in every block (BigGAN) *and* is concatenated to z before the
first linear layer, which makes G follow the condition early in training (cheap, helps CPU runs).
The label -> vector step is a separate module (`label_embedding`) so a continuous-label CcGAN can
swap in its own embedding (any module mapping `y` to `(N, cond_dim)`) without touching G:
`num_classes=None` means float labels in [0, 1] embedded by `label_embed` (see GeneratorSpec).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..models.base import channels_last
from .label_embed import make_label_embedding


def spatial_plan(image_size: int) -> tuple[int, int]:
    """(base side, number of x2 stages): halve while even and the half is >= 4.

    28 -> (7, 2), 32 -> (4, 3), 16 -> (4, 2), 8 -> (4, 1). Shared by G and D so they agree.
    """
    side, n = image_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(f"image_size must be s*2^k with s >= 4 and k >= 1 (e.g. 8, 16, 28, 32), got {image_size}")
    return side, n


def _embedding_dim(module: nn.Module, fallback: int | None) -> int:
    for attr in ("embedding_dim", "out_features", "out_dim"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    if fallback is None:
        raise ValueError("cannot infer the label embedding's output size: pass cond_dim")
    return fallback


class CondBatchNorm2d(nn.Module):
    """BN without affine, then a per-sample gain (1 + W_g c) and bias (W_b c) from the condition."""

    def __init__(self, num_features: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Linear(cond_dim, num_features)
        self.bias = nn.Linear(cond_dim, num_features)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        g = 1.0 + self.gain(c)[:, :, None, None]
        b = self.bias(c)[:, :, None, None]
        return self.bn(x) * g + b


class GBlock(nn.Module):
    """CBN-ReLU-up-conv-CBN-ReLU-conv + 1x1-conv-up shortcut (1x1 conv commutes with nearest
    upsampling, so it runs on the small map: same function, 4x cheaper)."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.bn1 = CondBatchNorm2d(in_ch, cond_dim)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.bn2 = CondBatchNorm2d(out_ch, cond_dim)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")


class CondGenerator(nn.Module):
    """G(z, y) -> images in [-1, 1], shape (N, out_channels, image_size, image_size).

    Widths: `base_channels * 2**(n_up - 2)` at the base side, halved by every up-block
    (28x28: 64@7 -> 32@14 -> 16@28 for base 64), floor 8. Most parameters sit in the first linear
    layer, which costs little compute; convs stay narrow at high resolution to keep CPU steps cheap.
    """

    def __init__(self, num_classes: int | None, z_dim: int = 64, out_channels: int = 1, image_size: int = 28,
                 base_channels: int = 64, label_embedding: nn.Module | None = None,
                 cond_dim: int | None = None):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.out_channels, self.image_size = out_channels, image_size
        self.base_side, n_up = spatial_plan(image_size)
        if label_embedding is None:
            if num_classes is None:
                raise ValueError("continuous labels (num_classes=None) need a label_embedding module")
            label_embedding = nn.Embedding(num_classes, cond_dim or 64)
        self.cond_dim = _embedding_dim(label_embedding, cond_dim)
        self.label_embedding = label_embedding
        widths = [max(8, int(base_channels * 2.0 ** (n_up - 2 - i))) for i in range(n_up + 1)]
        self.widths = widths
        self.linear = nn.Linear(z_dim + self.cond_dim, widths[0] * self.base_side ** 2)
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], self.cond_dim) for i in range(n_up))
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        own = [m for part in (self.linear, self.blocks, self.out_conv) for m in part.modules()]
        for m in own:  # not the label embedding: a caller's module keeps its own init
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in own:  # CBN projections keep nn.Linear's small default init: gain ~ 1
            if isinstance(m, CondBatchNorm2d):
                m.gain.reset_parameters()
                m.bias.reset_parameters()
        channels_last(self)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        c = self.label_embedding(y)
        h = self.linear(torch.cat([z, c], dim=1))
        h = h.view(z.size(0), self.widths[0], self.base_side, self.base_side)
        for block in self.blocks:
            h = block(h, c)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


@dataclass(frozen=True)
class GeneratorSpec:
    """The one factory of generators: constructor arguments of :class:`CondGenerator` (calling it
    builds one). Training, checkpoint probing, the artifact loader and synth actors all build from
    it, so a label-embedding variant is one field here, not four call sites.

    `num_classes=None`: a CcGAN generator for float labels in [0, 1], embedded by
    `label_embedding` ("mlp" | "sinusoidal", `embed_dim` outputs); both fields are ignored for
    classes (so class specs, and their weights, are unchanged)."""

    num_classes: int | None
    z_dim: int = 64
    base_channels: int = 64
    out_channels: int = 1
    image_size: int = 28
    label_embedding: str = "mlp"
    embed_dim: int = 128

    @classmethod
    def of(cls, cfg, num_classes: int | None, in_channels: int, image_size: int) -> "GeneratorSpec":
        """From a GANConfig and the data's shape (num_classes None = continuous labels)."""
        cont = {} if num_classes is not None else {"label_embedding": cfg.label_embedding,
                                                   "embed_dim": cfg.embed_dim}
        return cls(num_classes, z_dim=cfg.z_dim, base_channels=cfg.g_channels, out_channels=in_channels,
                   image_size=image_size, **cont)

    def __call__(self) -> CondGenerator:
        emb = None if self.num_classes is not None else make_label_embedding(self.label_embedding, self.embed_dim)
        return CondGenerator(self.num_classes, z_dim=self.z_dim, out_channels=self.out_channels,
                             image_size=self.image_size, base_channels=self.base_channels, label_embedding=emb)


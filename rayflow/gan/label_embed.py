"""Continuous-label embeddings y -> h for the CcGAN (labels y in [0, 1], float).

Two variants (``GANConfig.label_embedding``):

* ``"mlp"``: the paper's ``model_y2h`` (improved_CcGAN ``models/ResNet_embed.py``): 1 -> d, then
  [Linear, GroupNorm(8), ReLU] x 4 and a ReLU output. In the paper it is *pre-trained and frozen*:
  a regression CNN x -> h -> y is trained on the real data, then y2h is fitted so that its frozen
  head h2y gives back y (``fit_y2h``), which puts h(y) where the CNN puts images of label y. By
  default here G and D each own a y2h trained jointly with the GAN (no extra stage, no regression
  net needed); ``build_gan(..., y2h=fit_y2h(...))`` gives the paper's frozen, shared variant.
* ``"sinusoidal"``: fixed features [sin, cos](2 pi f_k y) at geometrically spaced frequencies
  f_k in [0.5, max_freq]; no parameters, no forward cost. The lowest frequency makes cos(pi y)
  monotone on [0, 1], so the label order survives; the learned part is G's CBN / input layer and
  D's projection.

D never uses h directly: its projection is <W h(y), phi(x)> with a spectrally normalised W
(``projection_embedding``), as the paper's SAGAN D (``sn_embedding1``, no bias).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm

EMBEDDINGS = ("mlp", "sinusoidal")


class LabelMLP(nn.Module):
    """The paper's y2h: y (N,) or (N, 1) -> h (N, out_features), ReLU features (as a CNN's).

    GroupNorm(8) as in the paper at 128 features, but never fewer than 8 channels per group:
    with 2 per group (16 features) GN maps the first layer's w*y + b to +-1 whatever y is, and
    the embedding starts out constant in y."""

    def __init__(self, out_features: int = 128, depth: int = 5, groups: int | None = None):
        super().__init__()
        groups = groups or min(8, out_features // 8)
        if not groups or out_features % groups:
            raise ValueError(f"label embedding size must be a multiple of 8, got {out_features}")
        self.out_features = out_features
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Linear(1 if i == 0 else out_features, out_features),
                       nn.GroupNorm(groups, out_features), nn.ReLU()]
        layers += [nn.Linear(out_features if depth > 1 else 1, out_features), nn.ReLU()]
        self.main = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return self.main(y.reshape(-1, 1).float())


class SinusoidalEmbedding(nn.Module):
    """y -> [sin(2 pi f_k y), cos(2 pi f_k y)]_k, f_k geometric in [0.5, max_freq]; no weights."""

    def __init__(self, out_features: int = 32, max_freq: float = 8.0):
        super().__init__()
        if out_features % 2 or out_features < 2:
            raise ValueError(f"sinusoidal embedding size must be even, got {out_features}")
        self.out_features = out_features
        k = out_features // 2
        ratio = (max_freq / 0.5) ** (1.0 / max(1, k - 1))
        self.register_buffer("freqs", 0.5 * ratio ** torch.arange(k, dtype=torch.float32), persistent=False)

    def forward(self, y: Tensor) -> Tensor:
        a = 2 * math.pi * y.reshape(-1, 1).float() * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def make_label_embedding(kind: str, dim: int) -> nn.Module:
    """The y -> h module of `kind` ("mlp" | "sinusoidal") with `dim` outputs."""
    if kind == "mlp":
        return LabelMLP(dim)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    raise ValueError(f"unknown label embedding {kind!r}; known: {', '.join(EMBEDDINGS)}")


class ProjectionEmbedding(nn.Module):
    """y -> SN-Linear(h(y)) (no bias): the label side of D's projection <., phi(x)>."""

    def __init__(self, embed: nn.Module, feature_dim: int):
        super().__init__()
        self.embed = embed
        lin = nn.Linear(embed.out_features, feature_dim, bias=False)
        nn.init.xavier_uniform_(lin.weight)
        self.proj = spectral_norm(lin)
        self.out_features = feature_dim

    def forward(self, y: Tensor) -> Tensor:
        return self.proj(self.embed(y))


def projection_embedding(kind: str, dim: int, feature_dim: int) -> ProjectionEmbedding:
    return ProjectionEmbedding(make_label_embedding(kind, dim), feature_dim)


def fit_y2h(y2h: nn.Module, h2y: nn.Module, labels: Tensor, *, steps: int = 2000, batch_size: int = 128,
            noise_sd: float = 0.2, lr: float = 0.01, seed: int = 0) -> nn.Module:
    """The paper's label-embedding step: train `y2h` so that the frozen head `h2y` (the last layer(s)
    of a regression net x -> h -> y trained on the real data) maps y2h(y + e) back to y + e,
    e ~ N(0, noise_sd^2), clamped to [0, 1]; y drawn from the distinct train labels. SGD with
    momentum and the paper's x0.1 steps at 30/50/70 % of training. Returns y2h, frozen, in eval mode.
    Uses its own torch.Generator (the global RNG is untouched)."""
    g = torch.Generator().manual_seed(seed)
    uniq = torch.unique(torch.as_tensor(labels, dtype=torch.float32).flatten())
    h2y = h2y.eval().requires_grad_(False)
    y2h.train().requires_grad_(True)
    opt = torch.optim.SGD(y2h.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * f) for f in (0.3, 0.5, 0.7)], 0.1)
    for _ in range(steps):
        y = uniq[torch.randint(0, len(uniq), (batch_size,), generator=g)]
        y = (y + noise_sd * torch.randn(batch_size, generator=g)).clamp(0.0, 1.0)
        loss = F.mse_loss(h2y(y2h(y)).reshape(-1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return y2h.eval().requires_grad_(False)


__all__ = ["EMBEDDINGS", "LabelMLP", "ProjectionEmbedding", "SinusoidalEmbedding", "fit_y2h",
           "make_label_embedding", "projection_embedding"]

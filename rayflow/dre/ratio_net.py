"""Conditional density-ratio network of cDR-RS: r(x | y) = p_real(x | y) / p_gen(x | y) >= 0.

The network sees frozen *features* of an image (from a classifier trained on real data), never the
image itself, concatenated with an embedding of the label. The label embedding is a constructor
argument so that regression (CcGAN) can plug in a continuous ``y -> h`` embedding later; the default
is the official ``nn.Embedding(C, C)`` for class ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["RatioMLP", "build_ratio_net"]


def _infer_label_dim(emb: nn.Module) -> int:
    for attr in ("embedding_dim", "out_features", "out_dim", "output_dim"):
        v = getattr(emb, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    raise ValueError(
        "RatioMLP: cannot infer the output size of the custom label_embedding "
        f"({type(emb).__name__}); pass label_dim=<its output dimension>"
    )


class RatioMLP(nn.Module):
    """``concat(embed(y), feat)`` -> [Linear -> GroupNorm(8) -> ReLU -> Dropout] * len(hidden) -> Linear -> ReLU.

    Args:
        feature_dim: size of the frozen feature vector.
        num_classes: number of classes C for the default ``nn.Embedding(C, C)``; may be ``None``
            when a custom ``label_embedding`` is given.
        hidden: widths of the hidden layers (official CIFAR MLP5: [2048, 1024, 512, 256, 128]).
        dropout: dropout probability after every hidden block.
        label_embedding: optional module mapping a batch of labels ``(N,)`` to ``(N, label_dim)``
            (e.g. CcGAN's y2h for continuous labels). Default ``nn.Embedding(C, C)``.
        label_dim: output size of a custom ``label_embedding`` when it cannot be inferred from an
            ``embedding_dim`` / ``out_features`` / ``out_dim`` attribute.
        groups: GroupNorm groups (8 as in the official code; reduced to ``gcd(groups, width)`` for
            widths not divisible by it, so tiny test nets still build).

    ``forward(features, y)`` returns the ratio, shape ``(N,)``, non-negative by the final ReLU.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int | None,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: float = 0.5,
        label_embedding: nn.Module | None = None,
        label_dim: int | None = None,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if feature_dim <= 0:
            raise ValueError(f"RatioMLP: feature_dim must be > 0, got {feature_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RatioMLP: dropout must be in [0, 1), got {dropout}")
        if label_embedding is None:
            if num_classes is None or num_classes <= 0:
                raise ValueError("RatioMLP: num_classes must be > 0 when no label_embedding is given")
            label_embedding = nn.Embedding(num_classes, num_classes)
            label_dim = num_classes
        elif label_dim is None:
            label_dim = _infer_label_dim(label_embedding)
        self.feature_dim = int(feature_dim)
        self.num_classes = num_classes
        self.label_dim = int(label_dim)
        self.label_embedding = label_embedding

        layers: list[nn.Module] = []
        width = self.feature_dim + self.label_dim
        for h in hidden:
            if h <= 0:
                raise ValueError(f"RatioMLP: hidden widths must be > 0, got {list(hidden)}")
            layers += [nn.Linear(width, h), nn.GroupNorm(math.gcd(groups, h), h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers += [nn.Linear(width, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = features.flatten(1)
        if features.shape[1] != self.feature_dim:
            raise ValueError(
                f"RatioMLP: expected features of size {self.feature_dim}, got {tuple(features.shape)}"
            )
        h = self.label_embedding(y)
        h = h.reshape(h.shape[0], -1).to(features.dtype)
        return self.body(torch.cat([h, features], dim=1)).squeeze(1)


def build_ratio_net(cfg, feature_dim: int, num_classes, *, dropout: float = 0.5,
                    label_embedding: nn.Module | None = None, label_dim: int | None = None) -> RatioMLP:
    """RatioMLP with the hidden widths of a ``DREConfig`` (``cfg.hidden``, or a sequence of widths).
    ``num_classes`` is a class count or a label space; a space picks the label input (an embedding of
    class ids, or a sinusoidal embedding of a continuous label)."""
    hidden = list(getattr(cfg, "hidden", cfg))
    if label_embedding is None and not isinstance(num_classes, int):
        from rayflow.labels import as_space

        label_embedding, label_dim = as_space(num_classes).ratio_embedding()
        num_classes = None
    return RatioMLP(feature_dim, num_classes, hidden=hidden, dropout=dropout,
                    label_embedding=label_embedding, label_dim=label_dim)

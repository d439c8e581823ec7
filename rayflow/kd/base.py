"""The one calling convention every KD loss module shares.

The Criterion hands each method a ``KDBatch`` restricted to the rows that have teacher targets,
with the teacher side already detached and everything in float32; a method returns its unweighted
scalar loss. Methods own their adapters, so ``Criterion.parameters()`` covers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class KDBatch:
    s_out: torch.Tensor  # student outputs (N, C) or (N, 1)
    s_feats: list[torch.Tensor]  # student feats, as FeatureNet returns them
    t_out: torch.Tensor | None  # teacher outputs, detached
    t_feats: list[torch.Tensor] | None  # teacher feats, detached
    y: torch.Tensor  # labels of these rows
    index: torch.Tensor | None = None  # stable sample indices (CRD), int64 (N,)


class KDLoss(nn.Module):
    """Base of the zoo's losses. Subclasses set what they need and implement ``forward(batch)``."""

    needs_features: bool = True  # teacher feats must be passed (the teacher runs on every KD row)
    needs_logits: bool = False  # teacher outputs must be passed
    needs_index: bool = False  # per-sample indices must be passed
    min_rows: int = 2  # skipped (contributes 0) on batches with fewer teacher rows

    def forward(self, batch: KDBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

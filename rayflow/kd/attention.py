"""AT (Zagoruyko & Komodakis 2017; RepDistiller Attention): match the L2-normalised spatial
attention maps mean_c |f|^p of paired stages. Channel counts may differ (the map averages over
them); the larger map is average-pooled to the smaller one's size. Needs feature maps on both."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rayflow.kd.adapters import pool_to_common
from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import ATConfig
from rayflow.kd.features import Side, pair_layers
from rayflow.train.tasks import Task


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


class ATLoss(KDLoss):
    def __init__(self, pairs: list[tuple[int, int]], p: float):
        super().__init__()
        self.pairs, self.p = pairs, p

    def forward(self, b: KDBatch):
        total = 0.0
        for i, j in self.pairs:
            fs, ft = pool_to_common(b.s_feats[i], b.t_feats[j])
            total = total + (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()
        return total


def build_at(cfg: ATConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> ATLoss:
    return ATLoss(pair_layers("at", s, t, cfg.student_layers, cfg.teacher_layers, vectors=False), cfg.p)

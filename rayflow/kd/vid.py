"""VID (Ahn et al. 2019; RepDistiller VIDLoss): per layer pair, a 1x1-conv regressor predicts the
teacher feature as a Gaussian mean with a learned per-channel variance; the loss is its negative
log-likelihood. Vectors are treated as (N, D, 1, 1) maps, so MLP pairs work on their embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rayflow.kd.adapters import as_map, conv1x1_regressor, pool_to_common
from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import VIDConfig
from rayflow.kd.features import Side, pair_layers
from rayflow.train.tasks import Task


class VIDPair(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, init_pred_var: float, eps: float):
        super().__init__()
        self.regressor = conv1x1_regressor(cin, mid, cout)
        # softplus^-1(init - eps), as RepDistiller: the predicted variance starts at init_pred_var
        self.log_scale = nn.Parameter(torch.full((cout,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        fs, ft = pool_to_common(as_map(fs), as_map(ft))
        mean = self.regressor(fs)
        var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - ft).pow(2) / var + torch.log(var))).mean()


class VIDLoss(KDLoss):
    def __init__(self, pairs: list[tuple[int, int]], layers: list[VIDPair]):
        super().__init__()
        self.pairs = pairs
        self.layers = nn.ModuleList(layers)

    def forward(self, b: KDBatch):
        return sum(m(b.s_feats[i], b.t_feats[j]) for (i, j), m in zip(self.pairs, self.layers))


def build_vid(cfg: VIDConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> VIDLoss:
    pairs = pair_layers("vid", s, t, cfg.student_layers, cfg.teacher_layers, vectors=True)
    layers = []
    for i, j in pairs:
        cin, cout = s.specs[i].shape[0], t.specs[j].shape[0]
        layers.append(VIDPair(cin, cfg.mid_channels or cout, cout, cfg.init_pred_var, cfg.eps))
    return VIDLoss(pairs, layers)

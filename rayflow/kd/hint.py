"""FitNet (Romero et al. 2015; RepDistiller HintLoss + ConvReg): a learned regressor takes the
student's hint layer to the teacher's hint layer's shape, and the loss is their mean squared error.
Works on two maps (conv regressor) or two vectors (Linear), e.g. an MLP student's embedding."""

from __future__ import annotations

import torch.nn.functional as F

from rayflow.kd.adapters import build_checked, hint_regressor
from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import FitNetConfig
from rayflow.kd.features import Side, check_kinds
from rayflow.train.tasks import Task

HINT_LAYER = 2  # RepDistiller --hint_layer default: the middle stage of its CIFAR ResNets


class FitNetLoss(KDLoss):
    def __init__(self, s_layer: int, t_layer: int, regressor):
        super().__init__()
        self.s_layer, self.t_layer = s_layer, t_layer
        self.regressor = regressor

    def forward(self, b: KDBatch):
        return F.mse_loss(self.regressor(b.s_feats[self.s_layer]), b.t_feats[self.t_layer])


def build_fitnet(cfg: FitNetConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> FitNetLoss:
    if cfg.student_layer is None and cfg.teacher_layer is None:
        both_maps = s.has_map(HINT_LAYER) and t.has_map(HINT_LAYER)
        i = j = HINT_LAYER if both_maps else -1
    else:
        i = cfg.student_layer if cfg.student_layer is not None else cfg.teacher_layer
        j = cfg.teacher_layer if cfg.teacher_layer is not None else cfg.student_layer
    i, j = s.index("fitnet", i), t.index("fitnet", j)
    check_kinds("fitnet", s, i, t, j, vectors=True)
    ss, ts = s.specs[i], t.specs[j]
    relu = ts.nonneg if cfg.relu is None else cfg.relu
    return FitNetLoss(i, j, build_checked("fitnet", hint_regressor(ss, ts, relu), ss, ts.shape))

"""BLKD as a named method: the Task's own distillation term, so classification (Hinton's softened
KL) and regression (squared error to the teacher's prediction) share one code path."""

from __future__ import annotations

from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import BLKDConfig
from rayflow.kd.features import Side
from rayflow.train.tasks import Task


class BLKDLoss(KDLoss):
    needs_features = False
    needs_logits = True
    min_rows = 1

    def __init__(self, task: Task, temperature: float):
        super().__init__()
        self.task, self.temperature = task, temperature

    def forward(self, b: KDBatch):
        return self.task.distill(b.s_out, b.t_out, self.temperature)


def build_blkd(cfg: BLKDConfig, s: Side, t: Side, *, task: Task, num_samples: int | None,
               temperature: float = 4.0) -> BLKDLoss:
    return BLKDLoss(task, cfg.temperature or temperature)

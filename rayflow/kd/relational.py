"""Parameter-free relational losses: they compare how samples of a batch relate to one another
(Gram matrices, distances and angles, cosine-similarity distributions), so student and teacher
features may have any sizes, maps or vectors. RepDistiller's SP, RKD and PKT, numerically as there."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import PKTConfig, RKDConfig, SPConfig
from rayflow.kd.features import Side, pick_one
from rayflow.train.tasks import Task


class _Pair(KDLoss):
    def __init__(self, s_layer: int, t_layer: int):
        super().__init__()
        self.s_layer, self.t_layer = s_layer, t_layer

    def flat(self, b: KDBatch) -> tuple[torch.Tensor, torch.Tensor]:
        fs, ft = b.s_feats[self.s_layer], b.t_feats[self.t_layer]
        return fs.reshape(len(fs), -1), ft.reshape(len(ft), -1)


class SPLoss(_Pair):
    """Similarity-preserving KD (Tung & Mori 2019): row-normalised batch Gram matrices."""

    def forward(self, b: KDBatch):
        fs, ft = self.flat(b)
        gs, gt = F.normalize(fs @ fs.t()), F.normalize(ft @ ft.t())
        return (gt - gs).pow(2).sum() / len(fs) ** 2


def pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    d = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(d, d.transpose(1, 2)).reshape(-1)


class RKDLoss(_Pair):
    """Relational KD (Park et al. 2019): mean-normalised pairwise distances and triplet angles,
    smooth-L1 matched. The angle term holds an (N, N, D) tensor: mind large batches."""

    def __init__(self, s_layer: int, t_layer: int, w_d: float, w_a: float):
        super().__init__(s_layer, t_layer)
        self.w_d, self.w_a = w_d, w_a

    def forward(self, b: KDBatch):
        fs, ft = self.flat(b)
        with torch.no_grad():
            td = pdist(ft)
            td = td / td[td > 0].mean()
            ta = _angles(ft)
        d = pdist(fs)
        d = d / d[d > 0].mean()
        return self.w_d * F.smooth_l1_loss(d, td) + self.w_a * F.smooth_l1_loss(_angles(fs), ta)


def _cosine_probs(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = torch.nan_to_num(x / (x.norm(dim=1, keepdim=True) + eps))
    sim = (x @ x.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


class PKTLoss(_Pair):
    """Probabilistic KT (Passalis & Tefas 2018): KL between the batch's cosine-similarity
    distributions (0 when they match)."""

    eps = 1e-7

    def forward(self, b: KDBatch):
        fs, ft = self.flat(b)
        ps, pt = _cosine_probs(fs, self.eps), _cosine_probs(ft, self.eps)
        return (pt * torch.log((pt + self.eps) / (ps + self.eps))).mean()


def build_sp(cfg: SPConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> SPLoss:
    return SPLoss(pick_one("sp", s, cfg.student_layer, -2, -1), pick_one("sp", t, cfg.teacher_layer, -2, -1))


def build_rkd(cfg: RKDConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> RKDLoss:
    return RKDLoss(pick_one("rkd", s, cfg.student_layer, -1), pick_one("rkd", t, cfg.teacher_layer, -1),
                   cfg.distance_weight, cfg.angle_weight)


def build_pkt(cfg: PKTConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> PKTLoss:
    return PKTLoss(pick_one("pkt", s, cfg.student_layer, -1), pick_one("pkt", t, cfg.teacher_layer, -1))

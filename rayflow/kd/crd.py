"""CRD (Tian et al. 2020; RepDistiller crd/): contrastive representation distillation with a
memory bank of one student and one teacher embedding per training sample.

Each sample's own pair is the positive; ``nce_k`` bank slots are the negatives. The bank is indexed
by a stable per-sample index in [0, num_samples) (the index contract: real images 0..N_real-1,
fakes N_real + their ordinal in the fake pool), so it must be sized for real + fake at build time.
The objective is instance discrimination, not class-based, so with uniform negatives it needs no
labels and applies to regression; ``other_class`` negatives (RepDistiller's 'exact' sampler) need
classes. The bank is updated only in training mode, so evaluating a loss does not move it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rayflow.kd.adapters import Embed
from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import CRDConfig
from rayflow.kd.errors import KDConfigError
from rayflow.kd.features import Side, pick_one
from rayflow.train.tasks import Task

_EPS = 1e-7
_RESAMPLE_ROUNDS = 4  # other_class: redraws of negatives that hit the anchor's class


def contrast_loss(x: torch.Tensor, n_data: int) -> torch.Tensor:
    """NCE loss of RepDistiller ContrastLoss (CRD eq. 18): column 0 positive, the rest negatives."""
    m = x.size(1) - 1
    pn = m / float(n_data)
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + pn + _EPS))
    log_d0 = torch.log(pn / (x[:, 1:] + pn + _EPS))
    return -(log_d1.sum() + log_d0.sum()) / len(x)


class CRDLoss(KDLoss):
    needs_index = True

    def __init__(self, s_layer: int, t_layer: int, s_dim: int, t_dim: int, num_samples: int,
                 feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, nce_m: float = 0.5,
                 other_class: bool = False):
        super().__init__()
        self.s_layer, self.t_layer = s_layer, t_layer
        self.embed_s, self.embed_t = Embed(s_dim, feat_dim), Embed(t_dim, feat_dim)
        self.n, self.k, self.t, self.m = num_samples, nce_k, nce_t, nce_m
        self.other_class = other_class
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("memory_s", torch.rand(num_samples, feat_dim, generator=g).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(num_samples, feat_dim, generator=g).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # normalisation constants, set on the first batch
        self.register_buffer("labels", torch.full((num_samples if other_class else 0,), -1, dtype=torch.long))

    def _negatives(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        neg = torch.randint(0, self.n, (len(idx), self.k), device=idx.device)
        if self.other_class:
            for _ in range(_RESAMPLE_ROUNDS):
                bad = self.labels[neg] == y.view(-1, 1)
                if not bad.any():
                    break
                neg[bad] = torch.randint(0, self.n, (int(bad.sum()),), device=idx.device)
        return torch.cat([idx.view(-1, 1), neg], 1)

    def _dots(self, memory: torch.Tensor, sel: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(N, K+1) dot products of each anchor with its selected bank rows.

        RepDistiller gathers the rows, an (N, K+1, D) tensor kept for backward: 537 MB per side
        at batch 64, K = 16384, D = 128. When the bank is smaller than that, one (N, num_samples)
        product against a copy of the bank (taken because the bank is updated in place before the
        backward pass) gives the same numbers at a fraction of the memory.
        """
        n, k1 = sel.shape
        d = memory.shape[1]
        if self.n * (d + n) < n * k1 * d:
            return (v @ memory.clone().t()).gather(1, sel)
        w = memory[sel.view(-1)].view(n, k1, d)
        return torch.bmm(w, v.unsqueeze(2)).squeeze(2)

    def _scores(self, memory: torch.Tensor, sel: torch.Tensor, v: torch.Tensor, which: int) -> torch.Tensor:
        out = torch.exp(self._dots(memory, sel, v) / self.t)
        if self.z[which] < 0:  # RepDistiller: Z = mean score * n_data, fixed after the first batch
            self.z[which] = out.detach().mean() * self.n
        return out / float(self.z[which])

    def forward(self, b: KDBatch):
        idx = b.index
        if idx is None:
            raise KDConfigError("crd: needs per-sample indices (index=...) into its memory bank")
        idx = idx.to(self.memory_s.device, torch.long)
        if idx.min() < 0 or idx.max() >= self.n:
            raise KDConfigError(f"crd: sample index out of range [0, {self.n}) of the memory bank "
                                f"(got {int(idx.min())}..{int(idx.max())}); size it num_samples = real + fake")
        vs = self.embed_s(b.s_feats[self.s_layer])
        vt = self.embed_t(b.t_feats[self.t_layer])
        sel = self._negatives(idx, b.y)
        out_s = self._scores(self.memory_t, sel, vs, 0)  # student anchor vs teacher bank
        out_t = self._scores(self.memory_s, sel, vt, 1)  # teacher anchor vs student bank
        loss = contrast_loss(out_s, self.n) + contrast_loss(out_t, self.n)
        if self.training:
            self._update(idx, vs.detach(), vt.detach(), b.y)
        return loss

    @torch.no_grad()
    def _update(self, idx, vs, vt, y):
        for memory, v in ((self.memory_s, vs), (self.memory_t, vt)):
            new = memory[idx] * self.m + v * (1 - self.m)
            memory.index_copy_(0, idx, F.normalize(new, dim=1))
        if self.other_class:
            self.labels.index_copy_(0, idx, y.to(torch.long))


def build_crd(cfg: CRDConfig, s: Side, t: Side, *, task: Task, num_samples: int | None) -> CRDLoss:
    other = (task.num_classes is not None) if cfg.negatives is None else cfg.negatives == "other_class"
    if other and task.num_classes is None:
        raise KDConfigError("crd: negatives='other_class' needs classes, but the task is regression; "
                            "use negatives='uniform' (or leave it unset)")
    if not num_samples or num_samples < 2:
        raise KDConfigError("crd: needs num_samples (the size of the sample-index space, real + fake "
                            f"pool) to size its memory bank, got {num_samples}")
    i, j = pick_one("crd", s, cfg.student_layer, -1), pick_one("crd", t, cfg.teacher_layer, -1)
    return CRDLoss(i, j, s.specs[i].numel, t.specs[j].numel, num_samples, cfg.feat_dim, cfg.nce_k,
                   cfg.nce_t, cfg.nce_m, other_class=other)

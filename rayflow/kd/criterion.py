"""The student's loss: gamma * task_loss + alpha * KD_T + sum_m beta_m * L_m.

It owns the methods' adapters and buffers (FitNet/VID regressors, CRD embeddings and memory
bank): give ``criterion.parameters()`` to the optimizer next to the student's and save
``criterion.state_dict()`` with it. The teacher never is part of it and is always detached here.
With no methods it is exactly the loop's historical ``_loss``: (1 - alpha) * task + alpha * KD_T
on the rows with teacher targets, and the bare task loss on a batch without any.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rayflow.kd.base import KDBatch, KDLoss
from rayflow.kd.config import KDConfig
from rayflow.kd.features import probe_features
from rayflow.kd.registry import build_method
from rayflow.train.tasks import Task

Tensor = torch.Tensor


def _split(x) -> tuple[Tensor | None, list[Tensor] | None]:
    """(out, feats) from a (out, feats) pair or a bare output tensor."""
    if x is None or isinstance(x, Tensor):
        return x, None
    out, feats = x
    return out, (list(feats) if feats is not None else None)


class Criterion(nn.Module):
    def __init__(self, cfg: KDConfig, task: Task, methods: Sequence[tuple[str, float, KDLoss]] = ()):
        """`methods`: (name, weight, loss module); a name used twice gets keys name_0, name_1, ..."""
        super().__init__()
        self.cfg, self.task = cfg, task
        names = [n for n, _, _ in methods]
        keys = [n if names.count(n) == 1 else f"{n}_{names[:i].count(n)}" for i, n in enumerate(names)]
        self.methods = nn.ModuleDict({k: m for k, (_, _, m) in zip(keys, methods)})
        self.weights = {k: float(w) for k, (_, w, _) in zip(keys, methods)}
        self.last_terms: dict[str, Tensor] = {}  # unweighted terms of the last call, detached (logging)

    @property
    def needs_teacher(self) -> bool:
        return self.cfg.alpha > 0 or len(self.methods) > 0

    @property
    def needs_teacher_features(self) -> bool:
        """True: the caller must run the teacher (``run_teacher``) on every KD row, fakes included."""
        return any(m.needs_features for m in self.methods.values())

    @property
    def needs_index(self) -> bool:
        """True: the caller must pass stable per-sample indices (CRD's memory bank)."""
        return any(m.needs_index for m in self.methods.values())

    @staticmethod
    @torch.no_grad()
    def run_teacher(teacher: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The teacher's (out, feats) on `x` without a graph (the caller keeps it in eval mode)."""
        out, feats = teacher(x, return_features=True)
        return out.detach(), [f.detach() for f in feats]

    def forward(self, student, teacher, y: Tensor, *, index: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """`student`: (out, feats) (or out alone when no feature method is on); `teacher`: the
        teacher's (out, feats), out alone, or None. Teacher rows with NaN outputs (samples without a
        teacher target, as ``Batch['t']``) and rows where `mask` is False take no KD terms. `index`:
        (N,) stable sample indices, needed by CRD (real 0..N_real-1, fake N_real + pool ordinal)."""
        s_out, s_feats = _split(student)
        task_loss = self.task.loss(s_out, y)
        self.last_terms = {"task": task_loss.detach()}
        t_out, t_feats = _split(teacher)
        if teacher is None or not self.needs_teacher:
            return task_loss
        have = torch.ones(len(y), dtype=torch.bool, device=s_out.device)
        if t_out is not None:
            t_out = t_out.detach().to(s_out.dtype)
            have &= ~torch.isnan(t_out.reshape(len(y), -1)).any(1)
        if mask is not None:
            have &= mask.to(have.device, torch.bool)
        if not bool(have.any()):
            return task_loss if self.cfg.gamma is None else self.cfg.gamma * task_loss
        gamma = 1.0 - self.cfg.alpha if self.cfg.gamma is None else self.cfg.gamma
        loss = gamma * task_loss
        if self.cfg.alpha > 0:
            if t_out is None:
                raise ValueError("alpha > 0: the Hinton term needs the teacher's outputs")
            kd = self.task.distill(s_out[have], t_out[have], self.cfg.temperature)
            self.last_terms["kd"] = kd.detach()
            loss = loss + self.cfg.alpha * kd
        if self.methods:
            loss = loss + self._methods(s_out, s_feats, t_out, t_feats, y, index, have)
        return loss

    def _methods(self, s_out, s_feats, t_out, t_feats, y, index, have) -> Tensor:
        n = int(have.sum())
        sub = (lambda v: v) if n == len(have) else (lambda v: v[have])
        f32 = (lambda v: sub(v).float())
        def users(need: str) -> list[str]:
            return [k for k, m in self.methods.items() if getattr(m, need)]

        if users("needs_features") and (s_feats is None or t_feats is None):
            raise ValueError(f"KD methods {users('needs_features')} need student and teacher features: "
                             "pass (out, feats) pairs")
        if users("needs_index") and index is None:
            raise ValueError(f"KD methods {users('needs_index')} need per-sample indices: pass index=")
        if users("needs_logits") and t_out is None:
            raise ValueError(f"KD methods {users('needs_logits')} need the teacher's outputs")
        b = KDBatch(s_out=f32(s_out), s_feats=[f32(f) for f in s_feats] if s_feats is not None else [],
                    t_out=f32(t_out) if t_out is not None else None,
                    t_feats=[f32(f.detach()) for f in t_feats] if t_feats is not None else None,
                    y=sub(y), index=sub(index) if index is not None else None)
        total = s_out.new_zeros(())
        with torch.autocast(s_out.device.type, enabled=False):
            for key, m in self.methods.items():
                if n < m.min_rows:
                    continue
                term = m(b)
                self.last_terms[key] = term.detach()
                total = total + self.weights[key] * term
        return total


def build_criterion(cfg: KDConfig, task: Task, *, student: nn.Module | None = None,
                    teacher: nn.Module | None = None, input_shape: Sequence[int] | None = None,
                    num_samples: int | None = None, student_name: str | None = None,
                    teacher_name: str | None = None) -> Criterion:
    """A Criterion for `cfg`, its adapters sized from one dummy forward of both models on inputs of
    `input_shape` (C, H, W) and placed on the student's device. Models are needed only when a method
    is configured; `num_samples` (real + fake pool) only for CRD."""
    if not cfg.methods:
        return Criterion(cfg, task)
    if student is None or teacher is None or input_shape is None:
        raise ValueError(f"KD methods {[m.method for m in cfg.methods]} need the student, the teacher and "
                         "input_shape to size their adapters")
    s_specs, t_specs = probe_features(student, input_shape), probe_features(teacher, input_shape)
    sn = student_name or type(getattr(student, "module", student)).__name__
    tn = teacher_name or type(getattr(teacher, "module", teacher)).__name__
    methods = [(m.method, m.weight, build_method(m, s_specs, t_specs, task=task, num_samples=num_samples,
                                       temperature=cfg.temperature, student_name=sn, teacher_name=tn))
               for m in cfg.methods]
    crit = Criterion(cfg, task, methods)
    p = next(iter(student.parameters()), None)
    return crit.to(p.device) if p is not None else crit

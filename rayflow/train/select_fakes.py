"""The useful-fakes lever: fake batches drawn from the fakes the current student finds most useful.

Every `every` steps the fake set (or a random `score_size` of it) is scored by the teacher's
entropy (its stored logits) or by KL(teacher || student) with the student as it is now, and the
batches until the next scoring are drawn from the top `share`. Why here, in the training worker,
on the fakes in memory: a Ray Data pass started from a worker that holds all CPUs deadlocks, and
the student being scored is this worker's own model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rayflow.config_mix import SelectFakesConfig
from rayflow.seeding import step_seed
from rayflow.train.sources import ArraySource

DRAW_STREAM, SCORE_STREAM = 0x73656C, 0x73636F  # seed parts of their own (the augmentation's stay)


def usefulness(by: str, teacher_logits: torch.Tensor, student_logits: torch.Tensor | None = None,
               temperature: float = 1.0) -> torch.Tensor:
    """One score per row, higher = more useful: the teacher's entropy, or KL(teacher || student),
    both on the distributions softened by `temperature` (what the KD term matches)."""
    log_t = F.log_softmax(teacher_logits.float() / temperature, 1)
    if by == "entropy":
        return -(log_t.exp() * log_t).sum(1)
    if by == "kl":
        if student_logits is None:
            raise ValueError("scoring fakes by kl needs the student's outputs")
        log_s = F.log_softmax(student_logits.float() / temperature, 1)
        return (log_t.exp() * (log_t - log_s)).sum(1)
    raise ValueError(f"unknown fake selection {by!r} (known: entropy, kl)")


def top_share(candidates: np.ndarray, scores: np.ndarray, share: float) -> np.ndarray:
    """The `share` of `candidates` with the highest scores (at least one; ties: the earlier row)."""
    k = max(1, math.ceil(share * len(candidates)))
    return candidates[np.argsort(-np.asarray(scores), kind="stable")[:k]]


class SelectedSource(ArraySource):
    """An ArraySource of fakes whose batches come from the current top share by usefulness.

    Every rank scores the same candidates (drawn from (seed, step), not the rank) with its replica
    of the student, so all ranks select alike; each rank then draws its own batch. `rescored`: the
    batch numbers at which a scoring ran. A resumed run scores at its first batch, with the student
    it resumed (the one the uninterrupted run scored with may be a few steps older)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, teacher_logits: np.ndarray,
                 select: SelectFakesConfig, student: nn.Module | None = None, device: torch.device | str = "cpu",
                 temperature: float = 1.0, **kw):
        if teacher_logits is None:
            raise ValueError("student.select_fakes scores fakes by their stored teacher logits: the fake set has none")
        if np.asarray(teacher_logits).shape[1] < 2:
            raise ValueError("student.select_fakes scores class distributions: not for a regression task")
        if select.by == "kl" and student is None:
            raise ValueError("student.select_fakes by kl needs the student being trained")
        super().__init__(images, labels, batch_size, teacher_logits=teacher_logits, **kw)
        self.select, self.student, self.device, self.temperature = select, student, device, temperature
        self.top: np.ndarray | None = None
        self.rescored: list[int] = []

    def skip(self, n: int) -> None:
        self.n += n
        self.top = None

    def _score(self, rows: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.asarray(self.t[rows], np.float32))
        s = None
        if self.select.by == "kl":
            from rayflow.train.loop import predict  # eval mode, no_grad, the train mode restored

            s = predict(self.student, self.images[rows], device=self.device)
        return usefulness(self.select.by, t, s, self.temperature).numpy()

    def _rescore(self) -> np.ndarray:
        n = len(self.labels)
        rows = np.arange(n)
        if n > self.select.score_size:
            rng = np.random.default_rng(step_seed(self.seed, self.n, SCORE_STREAM))
            rows = np.sort(rng.choice(n, self.select.score_size, replace=False))
        self.rescored.append(self.n)
        return top_share(rows, self._score(rows), self.select.share)

    def _next_indices(self) -> np.ndarray:
        if self.top is None or self.n % self.select.every == 0:
            self.top = self._rescore()
        rng = np.random.default_rng(step_seed(self.seed, self.rank, self.n, DRAW_STREAM))
        return rng.choice(self.top, self.bs, replace=len(self.top) < self.bs)

"""Teacher-based filtering and label adjustment of fake samples (cGAN-KD step M2). No Ray imports.

Classification: a fixed teacher scores every (subsampled) fake image by its cross-entropy w.r.t. the
conditioning class; per class y the cutoff α(ρ, y) is the ρ-quantile of those losses on a burn-in,
and a sample is kept iff ``loss <= α(ρ, y)`` (so ρ ≈ the fraction kept; ρ = 1 keeps everything).
Optionally the label is replaced by the teacher's argmax (:func:`relabel`).

Regression: one global cutoff α(ρ) = ρ-quantile of ``|f_t(x) − y|`` over all samples
(:func:`global_cutoff`), then the label is replaced by the (clipped) teacher prediction.
Both modes share :func:`quantile_cutoffs`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "teacher_ce",
    "check_rho",
    "quantile_cutoffs",
    "class_cutoffs",
    "global_cutoff",
    "keep_mask",
    "relabel",
    "soft_targets",
]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def teacher_ce(logits: Any, labels: Any) -> torch.Tensor:
    """Per-sample cross-entropy ``(N,)`` (float32) of teacher ``logits (N, C)`` w.r.t. ``labels (N,)``."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels, device=logits.device).long()
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(
            f"teacher_ce: expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits.float(), labels, reduction="none")


def check_rho(rho: float) -> float:
    """Validate the keep-fraction ρ ∈ (0, 1]; raises ValueError naming rho otherwise."""
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"filter rho must be a number in (0, 1], got {rho!r}") from None
    if not (0.0 < rho <= 1.0) or math.isnan(rho):
        raise ValueError(f"filter rho must be in (0, 1] (the fraction of samples kept), got {rho}")
    return rho


def quantile_cutoffs(losses: Any, rho: float, labels: Any = None, num_classes: int | None = None,
                     per_class: bool = True) -> np.ndarray | float:
    """ρ-quantile cutoffs of ``losses``: per class (``(C,)`` array) or global (a float).

    ``per_class=True`` needs ``labels`` (int class ids in ``[0, num_classes)``) and raises a
    ValueError naming every class with no sample; ``per_class=False`` ignores the labels
    (regression: losses are ``|teacher(x) − y|``). Quantiles use ``np.quantile(..., method="linear")``.
    """
    rho = check_rho(rho)
    x = _np(losses).astype(np.float64, copy=False).reshape(-1)
    if len(x) == 0:
        raise ValueError("quantile_cutoffs: no losses given")
    if np.isnan(x).any():
        raise ValueError("quantile_cutoffs: losses contain NaN")
    if not per_class:
        return float(np.quantile(x, rho))
    if labels is None or num_classes is None:
        raise ValueError("quantile_cutoffs: per-class cutoffs need labels and num_classes")
    y = _np(labels).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"quantile_cutoffs: {len(x)} losses but {len(y)} labels")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"quantile_cutoffs: labels must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise ValueError(
            f"quantile_cutoffs: no samples for class(es) {missing.tolist()} — cannot set their filter "
            "cutoff (generate a burn-in for every class)"
        )
    order = np.argsort(y, kind="stable")
    groups = np.split(x[order], np.cumsum(counts)[:-1])
    return np.array([np.quantile(g, rho) for g in groups], dtype=np.float64)


def class_cutoffs(losses: Any, labels: Any, rho: float, num_classes: int) -> np.ndarray:
    """Per-class cutoffs ``(C,)``: ``cutoff[c] = np.quantile(losses[labels == c], rho)``."""
    return quantile_cutoffs(losses, rho, labels=labels, num_classes=num_classes, per_class=True)


def global_cutoff(abs_errors: Any, rho: float) -> float:
    """One cutoff over all samples (regression): ``np.quantile(abs_errors, rho)``."""
    return quantile_cutoffs(abs_errors, rho, per_class=False)


def keep_mask(losses: Any, labels: Any, cutoffs: Any) -> np.ndarray:
    """Boolean mask ``(N,)``: keep ``loss <= cutoff[label]`` (per-class ``(C,)`` cutoffs) or
    ``loss <= cutoff`` (a scalar global cutoff; ``labels`` may then be ``None``). NaN losses are dropped."""
    x = _np(losses).astype(np.float64, copy=False).reshape(-1)
    c = _np(cutoffs).astype(np.float64, copy=False)
    if c.ndim == 0:
        return x <= float(c)
    if labels is None:
        raise ValueError("keep_mask: per-class cutoffs need labels")
    y = _np(labels).reshape(-1).astype(np.int64)
    if len(y) != len(x):
        raise ValueError(f"keep_mask: {len(x)} losses but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(c)):
        raise ValueError(f"keep_mask: labels must be in [0, {len(c)}), got range [{y.min()}, {y.max()}]")
    return x <= c[y]


def relabel(logits: Any) -> Any:
    """Teacher argmax labels (int64); a tensor for tensor input, else a numpy array."""
    if isinstance(logits, torch.Tensor):
        return logits.argmax(dim=1)
    return np.asarray(logits).argmax(axis=1).astype(np.int64)


def soft_targets(logits: Any, T: float = 1.0) -> torch.Tensor:
    """Temperature-softened teacher probabilities ``softmax(logits / T)``, float32 ``(N, C)``."""
    if not T > 0:
        raise ValueError(f"soft_targets: temperature T must be > 0, got {T}")
    return F.softmax(torch.as_tensor(logits).float() / T, dim=1)

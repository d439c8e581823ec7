"""Per-label density-ratio rejection sampling (cDR-RS; DRS-style "enhanced sampler").

For each label y keep a running maximum M̄_y of the ratio: fixed first by a burn-in
(:meth:`RejectionSampler.estimate_max`), then raised on the fly by every new batch's maximum for that
label. A sample is accepted iff ``U < r / M̄_y`` with ``U ~ Uniform[0, 1)`` (accepted with probability
exactly ``min(r / M̄_y, 1)``; a zero ratio is never accepted). Accepted samples are distributed as
``q · r / E_q[r]`` ≈ p when r ≈ p/q and ``M̄_y >= max r``.

Streaming use: the state is the per-label M̄ (plus the seed and a call counter); the uniform draws of
a batch are derived from ``(seed, rng_key)``, so a pipeline that passes e.g. ``rng_key=(shard_id,
batch_idx)`` and restores the sampler state saved at the shard start (:meth:`state_dict`,
:meth:`from_state`) reproduces every decision of a re-run shard. For decisions that do not depend on
the order shards run in, freeze M̄ after the burn-in with ``accept(..., update_max=False)``
(ratios above M̄ are then accepted with probability 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["RejectionSampler", "estimate_max"]

LabelKey = int | float


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _key(v: Any) -> LabelKey:
    """Hashable, JSON-friendly dictionary key for one label value."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(v)


def _check(ratios: Any, labels: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    r = _to_numpy(ratios).astype(np.float64, copy=False).reshape(-1)
    y = _to_numpy(labels).reshape(-1)
    if len(r) != len(y):
        raise ValueError(f"RejectionSampler.{who}: {len(r)} ratios but {len(y)} labels")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"RejectionSampler.{who}: ratios contain NaN or inf (the ratio net diverged?)")
    return np.clip(r, 0.0, None), y


def estimate_max(ratios: Any, labels: Any) -> dict[LabelKey, float]:
    """Per-label maximum of burn-in ratios: ``{label: max r}``."""
    r, y = _check(ratios, labels, "estimate_max")
    uniq, inv = np.unique(y, return_inverse=True)
    maxima = np.full(len(uniq), -np.inf)
    np.maximum.at(maxima, inv, r)
    return {_key(u): float(m) for u, m in zip(uniq, maxima)}


class RejectionSampler:
    """Per-label rejection sampler driven by density ratios.

    Args:
        score_fn: optional ``score_fn(feats, labels) -> ratios`` (e.g. a closure over
            :func:`rayflow.dre.train.ratio_scores`), used by :meth:`__call__`.
        burnin_max: initial M̄: a ``{label: max}`` mapping (from :meth:`estimate_max` / a burn-in),
            a single float used as the start value for every label, or ``None`` (the first batch
            of each label acts as its burn-in).
        seed: non-negative integer; with ``rng_key`` it determines every uniform draw.
    """

    def __init__(self, score_fn: Callable[[Any, Any], Any] | None = None,
                 burnin_max: Mapping[Any, float] | float | None = None, seed: int = 0) -> None:
        if int(seed) < 0:
            raise ValueError(f"RejectionSampler: seed must be >= 0, got {seed}")
        self.score_fn = score_fn
        self.seed = int(seed)
        self.default_max: float | None = None
        self.max_ratio: dict[LabelKey, float] = {}
        self.calls = 0
        if isinstance(burnin_max, Mapping):
            self.max_ratio = {_key(k): float(v) for k, v in burnin_max.items()}
        elif burnin_max is not None:
            self.default_max = float(burnin_max)

    # ------------------------------------------------------------------ burn-in / state

    def estimate_max(self, ratios: Any, labels: Any) -> dict[LabelKey, float]:
        """Burn-in: raise M̄_y to the per-label max of ``ratios``; returns the updated ``{label: M̄}``."""
        for k, m in estimate_max(ratios, labels).items():
            self.max_ratio[k] = max(m, self.max_ratio.get(k, self.default_max or 0.0))
        return dict(self.max_ratio)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (M̄ as ``[label, value]`` pairs, seed, default max, call counter)."""
        return {
            "seed": self.seed,
            "default_max": self.default_max,
            "max_ratio": [[k, v] for k, v in self.max_ratio.items()],
            "calls": self.calls,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.default_max = None if state.get("default_max") is None else float(state["default_max"])
        self.max_ratio = {_key(k): float(v) for k, v in state["max_ratio"]}
        self.calls = int(state.get("calls", 0))

    @classmethod
    def from_state(cls, state: Mapping[str, Any], score_fn: Callable[[Any, Any], Any] | None = None) -> RejectionSampler:
        s = cls(score_fn=score_fn, seed=int(state["seed"]))
        s.load_state_dict(state)
        return s

    # ------------------------------------------------------------------ decisions

    def _uniforms(self, n: int, rng_key: int | Sequence[int] | None) -> np.ndarray:
        if rng_key is None:
            entropy = [self.seed, 0, self.calls]
            self.calls += 1
        else:
            key = [int(rng_key)] if np.ndim(rng_key) == 0 else [int(k) for k in rng_key]
            if any(k < 0 for k in key):
                raise ValueError(f"RejectionSampler: rng_key must be non-negative integers, got {rng_key}")
            entropy = [self.seed, 1, *key]
        return np.random.default_rng(entropy).random(n)

    def _per_sample_max(self, r: np.ndarray, y: np.ndarray, update_max: bool) -> np.ndarray:
        uniq, inv = np.unique(y, return_inverse=True)
        ms = np.empty(len(uniq))
        for i, u in enumerate(uniq):
            k = _key(u)
            m = self.max_ratio.get(k, self.default_max)
            if update_max:
                bmax = float(r[inv == i].max())
                m = bmax if m is None else max(m, bmax)
                self.max_ratio[k] = m
            elif m is None:
                raise ValueError(f"RejectionSampler: no max ratio for label {k}; run estimate_max (burn-in) first")
            if not m > 0:
                raise ValueError(
                    f"RejectionSampler: max ratio for label {k} is {m}; the ratio net outputs 0 for every "
                    "sample of this label (degenerate density-ratio model)"
                )
            ms[i] = m
        return ms[inv]

    def acceptance_prob(self, ratios: Any, labels: Any) -> np.ndarray:
        """``min(r / M̄_y, 1)`` with the current M̄ (no update, no draws)."""
        r, y = _check(ratios, labels, "acceptance_prob")
        return np.minimum(r / self._per_sample_max(r, y, update_max=False), 1.0)

    def accept(self, ratios: Any, labels: Any, rng_key: int | Sequence[int] | None = None,
               update_max: bool = True) -> np.ndarray:
        """Boolean accept mask ``(N,)`` for one batch.

        M̄_y is first raised to the batch max of label y (unless ``update_max=False``), then sample i
        is accepted iff ``U_i < r_i / M̄_{y_i}``. The draws come from ``(seed, rng_key)``; without a
        key, from ``(seed, call counter)`` (deterministic given the seed and the call order).
        """
        r, y = _check(ratios, labels, "accept")
        prob = np.minimum(r / self._per_sample_max(r, y, update_max), 1.0)
        return self._uniforms(len(r), rng_key) < prob

    def __call__(self, feats: Any, labels: Any, rng_key: int | Sequence[int] | None = None,
                 update_max: bool = True) -> np.ndarray:
        """Score ``feats`` with ``score_fn`` and return the accept mask."""
        if self.score_fn is None:
            raise ValueError("RejectionSampler: no score_fn given; call accept(ratios, labels) instead")
        return self.accept(self.score_fn(feats, labels), labels, rng_key=rng_key, update_max=update_max)

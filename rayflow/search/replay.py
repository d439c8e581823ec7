"""Offline replay of searchers against a recorded grid (no Ray, no training).

``recorded`` maps a config key (``space.key(config)``: ``(rho, m[, real_fraction][, kd_weight])``)
to the measured errors of that config, one per student seed. A replay runs a searcher, answers
each proposal from the recording (``noise="mean"``: the mean over seeds; ``noise="pick"``: one
recorded seed drawn by a seeded RNG, i.e. what a single real trial would have seen), and records the
best-so-far curve: after t trials, the *mean* recorded error of the incumbent (the config with the
lowest error the searcher has seen). ``trials_to_reach`` counts trials until that curve is within
``tol`` of the grid's best mean; ``tol`` defaults to the student-seed noise (pooled std of the
recorded seeds, 0 with a single seed).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .searchers import Searcher, make_searcher
from .space import SearchSpace

__all__ = ["compare", "grid_best", "pooled_std", "replay", "summary", "trials_to_reach"]

Recorded = Mapping[tuple, Sequence[float]]


def pooled_std(recorded: Recorded) -> float:
    """sqrt of the mean within-config variance (ddof=1) over configs with ≥ 2 seeds; 0 if none."""
    num = den = 0.0
    for errs in recorded.values():
        e = np.asarray(errs, dtype=float)
        if len(e) >= 2:
            num += float(((e - e.mean()) ** 2).sum())
            den += len(e) - 1
    return math.sqrt(num / den) if den else 0.0


def grid_best(recorded: Recorded) -> tuple[tuple, float]:
    """(key, mean error) of the config with the lowest mean recorded error."""
    if not recorded:
        raise ValueError("replay: empty recorded grid")
    k = min(recorded, key=lambda key: (float(np.mean(recorded[key])), key))
    return k, float(np.mean(recorded[k]))


def trials_to_reach(curve: Sequence[float], target: float, tol: float = 0.0) -> int | None:
    """1-based number of trials until ``curve[t] <= target + tol``; None if never."""
    for t, v in enumerate(curve):
        if v <= target + tol + 1e-12:
            return t + 1
    return None


def replay(
    recorded: Recorded,
    make: Callable[[int], Searcher],
    n_seeds: int = 20,
    noise: str = "mean",
    *,
    budget: int | None = None,
    key: Callable[[Mapping], tuple] | None = None,
    tol: float | None = None,
    stop_at_target: bool = False,
    noise_seed: int = 0,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Run ``make(seed)`` for each seed against ``recorded``; one dict per seed (see module docstring).

    Each dict: ``seed``, ``keys`` (proposals in order), ``observed`` (values told), ``curve``
    (incumbent's mean error after each trial), ``best_observed`` and ``trials_to_best``.
    ``budget`` defaults to the grid size; ``stop_at_target`` ends a run once the target is reached.
    ``key`` maps a proposal to a recorded key (default: the searcher's ``space.key``).
    """
    if noise not in ("mean", "pick"):
        raise ValueError(f"replay: noise must be 'mean' or 'pick', got {noise!r}")
    means = {k: float(np.mean(v)) for k, v in recorded.items()}
    _, target = grid_best(recorded)
    tol = pooled_std(recorded) if tol is None else float(tol)
    budget = len(recorded) if budget is None else int(budget)
    runs = []
    for seed in range(n_seeds) if seeds is None else seeds:
        searcher = make(seed)
        to_key = key or getattr(getattr(searcher, "space", None), "key", None) or (lambda c: tuple(c.values()))
        rng = np.random.default_rng([int(noise_seed), int(seed)])
        keys, observed, curve, best_obs = [], [], [], []
        inc_val, inc_key = math.inf, None
        for _ in range(budget):
            cfg = searcher.ask()
            if cfg is None:
                break
            k = to_key(cfg)
            if k not in recorded:
                raise KeyError(
                    f"replay: searcher proposed {cfg!r} (key {k!r}), which is not in the recorded grid; "
                    "give the searcher the recorded configs as candidates"
                )
            errs = recorded[k]
            val = means[k] if noise == "mean" else float(errs[int(rng.integers(len(errs)))])
            searcher.tell(cfg, val)
            keys.append(k)
            observed.append(val)
            if val < inc_val:
                inc_val, inc_key = val, k
            curve.append(means[inc_key]), best_obs.append(inc_val)
            if stop_at_target and curve[-1] <= target + tol + 1e-12:
                break
        runs.append(
            {
                "seed": seed,
                "keys": keys,
                "observed": observed,
                "curve": curve,
                "best_observed": best_obs,
                "trials_to_best": trials_to_reach(curve, target, tol),
            }
        )
    return runs


def summary(runs: Sequence[Mapping], recorded: Recorded, name: str = "", tol: float | None = None) -> dict:
    """Mean/median trials-to-best over runs (a run that never gets there counts as grid size + 1)."""
    n_grid = len(recorded)
    _, target = grid_best(recorded)
    tol = pooled_std(recorded) if tol is None else float(tol)
    t = [trials_to_reach(r["curve"], target, tol) for r in runs]
    filled = [n_grid + 1 if v is None else v for v in t]
    mean = float(np.mean(filled)) if filled else math.nan
    return {
        "searcher": name,
        "n_seeds": len(runs),
        "grid_size": n_grid,
        "target": target,
        "tol": tol,
        "mean_trials": mean,
        "median_trials": float(statistics.median(filled)) if filled else math.nan,
        "max_trials": max(filled) if filled else None,
        "fraction_of_grid": mean / n_grid,
        "reached": float(np.mean([v is not None for v in t])) if t else math.nan,
    }


def compare(
    recorded: Recorded,
    prior: Callable[[dict], Any] | Mapping[tuple, Any] | None,
    space: SearchSpace,
    names: Sequence[str] = ("grid", "random", "tpe", "bound"),
    n_seeds: int = 20,
    noise: str = "mean",
    *,
    tol: float | None = None,
    budget: int | None = None,
    stop_at_target: bool = False,
    prior_for_seed: Callable[[int], Any] | None = None,
    searcher_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Replay each named searcher (candidates = the recorded configs) → (table of :func:`summary` rows, {name: runs}).

    ``prior_for_seed(seed)`` (optional) gives a per-seed prior instead of the fixed ``prior``.
    """
    candidates = [space.from_key(k) for k in sorted(recorded)]
    table, curves = [], {}
    for name in names:
        kw = dict((searcher_kwargs or {}).get(name, {}))

        def make(seed: int, name: str = name, kw: dict = kw) -> Searcher:
            p = prior_for_seed(seed) if prior_for_seed is not None else prior
            return make_searcher(name, space, seed, candidates, prior=p if name == "bound" else None, **kw)

        runs = replay(recorded, make, n_seeds, noise, budget=budget, tol=tol, stop_at_target=stop_at_target)
        curves[name] = runs
        table.append(summary(runs, recorded, name, tol))
    return table, curves

"""Bound-guided search: the error bound as a decaying prior plus a refitted bound → error model. No Ray.

Algorithm (over a finite pool: the ``candidates``, else ``space.grid()``):

1. Each pool config c gets the bound's predicted error b(c) (``prior(config)``, a number or a dict
   of terms with ``total``; or ``prior[space.key(config)]``). Two views of it are precomputed: the
   z-score u(c) (a regression feature) and the rank quantile q(c) ∈ [0, 1] (0 = lowest bound).
2. No observation yet: propose the free candidate with the lowest bound (ties: seeded order).
3. After n ≥ 1 finite observations, fit a Gaussian process to the standardised measured errors with
   kernel ``c0 + τ²·u·u' + σf²·RBF(x, x'; ℓ)`` (x = unit-cube coordinates, M on log scale): the
   linear-in-u part is the refitted mapping bound → measured error (its slope, of either sign, is
   learnt from the data, so a reversed bound becomes useful once seen to be reversed), the RBF part
   is a local residual correction over the configs. (τ², σf², ℓ, σn²) are chosen on a small grid by
   marginal likelihood (fixed defaults while n < 3). Pending (asked, not told) configs are added as
   "kriging believer" fantasies so concurrent asks spread out.
4. Acquisition (πBO, Hvarfner et al. 2022): ``log EI(c) − (prior_strength / n)·q(c)``, i.e. expected
   improvement times the prior π(c) ∝ exp(−λ q(c)) raised to a power that decays as 1/n. The prior's
   pull shrinks as data arrives; a wrong bound only slows the search; candidates never repeat, so
   the best is always reached within the pool size.

Everything is a deterministic function of (space, pool, prior, seed, told history, pending), so the
state is the history and ``load`` reproduces the exact next proposals.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.special import ndtr

from .searchers import BaseSearcher
from .space import SearchSpace

__all__ = ["BoundGuidedSearcher", "log_expected_improvement", "prior_values"]

# Hyper-parameter grid (standardised y, u z-scored, x in the unit cube) and the default for n < 3.
_TAU2 = (0.0, 0.3, 3.0)
_SF2 = (0.1, 1.0)
_ELL = (0.15, 0.3, 0.6)
_SN2 = (0.01, 0.1)
_DEFAULT = (1.0, 0.5, 0.3, 0.05)
_C0 = 1.0


_CONTROLLER: Any = None


def _one_blas_thread() -> Any:
    global _CONTROLLER
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=1, user_api="blas")
    except (ImportError, RuntimeError, ValueError):  # no threadpoolctl: run with the default threads
        return contextlib.nullcontext()


def _total(v: Any) -> float:
    if isinstance(v, Mapping):
        v = v.get("total", math.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def prior_values(
    space: SearchSpace, prior: Callable[[dict], Any] | Mapping[tuple, Any], configs: Sequence[Mapping]
) -> np.ndarray:
    """The bound's predicted error for each config (NaN where the prior has none)."""
    out = np.empty(len(configs))
    for i, c in enumerate(configs):
        if callable(prior):
            out[i] = _total(prior(dict(c)))
        else:
            out[i] = _total(prior.get(space.key(c), math.nan))
    return out


def log_expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float) -> np.ndarray:
    """log E[max(best − f, 0)] for f ~ N(mu, sigma²) (minimisation), stable for very negative z."""
    sigma = np.maximum(sigma, 1e-12)
    z = (best - mu) / sigma
    out = np.empty_like(z)
    hi = z > -6.0
    zh = z[hi]
    out[hi] = np.log(np.maximum(zh * ndtr(zh) + np.exp(-0.5 * zh**2) / math.sqrt(2 * math.pi), 1e-300))
    zl = z[~hi]  # h(z) ≈ φ(z)/z² · (1 − 3/z²)
    out[~hi] = -0.5 * zl**2 - 0.5 * math.log(2 * math.pi) - 2 * np.log(-zl) + np.log1p(-3.0 / zl**2)
    return out + np.log(sigma)


def _kernel(xa, ua, xb, ub, tau2, sf2, ell):
    d2 = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    return _C0 + tau2 * np.outer(ua, ub) + sf2 * np.exp(-0.5 * d2 / ell**2)


class _GP:
    def __init__(self, x, u, y, hp):
        self.x, self.u, self.hp = x, u, hp
        tau2, sf2, ell, sn2 = hp
        k = _kernel(x, u, x, u, tau2, sf2, ell) + (sn2 + 1e-8) * np.eye(len(y))
        self.chol = np.linalg.cholesky(k)
        self.alpha = cho_solve((self.chol, True), y)

    def predict(self, x, u):
        tau2, sf2, ell, _ = self.hp
        ks = _kernel(x, u, self.x, self.u, tau2, sf2, ell)
        v = solve_triangular(self.chol, ks.T, lower=True)
        mu = ks @ self.alpha
        var = _C0 + tau2 * u**2 + sf2 - (v**2).sum(0)
        return mu, np.sqrt(np.maximum(var, 1e-12))


class BoundGuidedSearcher(BaseSearcher):
    """See the module docstring. ``prior``: callable config → bound (number or dict with ``total``), or ``{space.key(c): value}``."""

    name = "bound"

    def __init__(
        self,
        space: SearchSpace,
        prior: Callable[[dict], Any] | Mapping[tuple, Any],
        seed: int = 0,
        candidates: Sequence[Mapping] | None = None,
        *,
        prior_strength: float = 4.0,
    ):
        super().__init__(space, seed, space.grid() if candidates is None else candidates)
        self.prior = prior
        self.prior_strength = float(prior_strength)
        self.x = space.to_unit(self.candidates)
        b = prior_values(space, prior, self.candidates)
        if not np.isfinite(b).any():
            raise ValueError("bound searcher: the prior gave no finite value for any candidate")
        self.b = b
        fill = float(np.nanmedian(b))
        bf = np.where(np.isfinite(b), b, fill)
        self._b_mean, self._b_sd = float(bf.mean()), float(bf.std())
        self.u = self._z(bf)
        n = len(bf)  # rank quantile; equal bounds share their lowest rank (ties broken by the seeded order)
        self.q = np.searchsorted(np.sort(bf), bf, side="left") / max(n - 1, 1)
        self.tiebreak = np.random.default_rng(self.seed).permutation(n)
        self.last_hp: tuple | None = None

    def _z(self, b: np.ndarray) -> np.ndarray:
        return np.clip((b - self._b_mean) / self._b_sd, -5, 5) if self._b_sd > 0 else np.zeros_like(b)

    def _extra_fingerprint(self) -> Any:
        return [self.prior_strength, [round(float(v), 12) if np.isfinite(v) else None for v in self.b]]

    def _features(self, configs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(x, u) of told/pending configs; off-pool configs get their own prior value (median if none)."""
        xs, us = [], []
        for c in configs:
            i = self._index.get(self.space.key(c))
            if i is not None:
                xs.append(self.x[i])
                us.append(self.u[i])
                continue
            bv = prior_values(self.space, self.prior, [c])[0]
            xs.append(self.space.to_unit(c))
            us.append(float(self._z(np.array([bv if np.isfinite(bv) else np.nanmedian(self.b)]))[0]))
        return np.array(xs).reshape(len(configs), self.x.shape[1]), np.array(us)

    def _fit(self, x, u, y) -> _GP:
        """GP at the hyper-parameters with the highest marginal likelihood (all grid points in one batch)."""
        if len(y) < 3:
            return _GP(x, u, y, _DEFAULT)
        grid = list(itertools.product(_TAU2, _SF2, _ELL, _SN2))
        hp = np.array(grid)
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        rbf = np.exp(-0.5 * d2[None] / hp[:, 2, None, None] ** 2)
        k = (
            _C0
            + hp[:, 0, None, None] * np.outer(u, u)[None]
            + hp[:, 1, None, None] * rbf
            + (hp[:, 3, None, None] + 1e-8) * np.eye(len(y))[None]
        )
        try:
            chol = np.linalg.cholesky(k)
            alpha = np.linalg.solve(k, np.broadcast_to(y[:, None], (len(grid), len(y), 1)))[..., 0]
        except np.linalg.LinAlgError:
            return _GP(x, u, y, _DEFAULT)
        lml = -0.5 * (alpha @ y) - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
        return _GP(x, u, y, grid[int(np.argmax(lml))])  # argmax: first of equal maxima, deterministic

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(free candidate indices, acquisition score): higher is proposed first."""
        free = np.array(self._free(), dtype=int)
        obs = self.observations()
        if len(free) == 0 or not obs:
            return free, -self.q[free] if len(free) else np.zeros(0)
        xo, uo = self._features([c for c, _ in obs])
        y = np.array([e for _, e in obs])
        sd = float(y.std())
        ys = (y - y.mean()) / (sd if sd > 1e-12 else 1.0)
        gp = self._fit(xo, uo, ys)
        self.last_hp = gp.hp
        if self._pending:  # kriging believer: pending configs are assumed to come back at the predicted mean
            xp, up = self._features(self.pending)
            mp, _ = gp.predict(xp, up)
            gp = _GP(np.vstack([xo, xp]), np.concatenate([uo, up]), np.concatenate([ys, mp]), gp.hp)
        mu, sigma = gp.predict(self.x[free], self.u[free])
        acq = log_expected_improvement(mu, sigma, float(ys.min())) - self.prior_strength / len(obs) * self.q[free]
        return free, acq

    def ask(self) -> dict | None:
        with _one_blas_thread():  # tiny matrices: threaded BLAS only adds contention (7x slower on a busy 2-core box)
            free, acq = self.scores()
        if len(free) == 0:
            return None
        order = np.lexsort((self.tiebreak[free], -acq))  # max score, ties by the seeded permutation
        return self._propose(self.candidates[int(free[order[0]])])

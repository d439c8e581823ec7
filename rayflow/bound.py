"""The cGAN-KD error bound from one scored fake pool and held-out reals, no student trained
(docs/bound.md). Plain numpy; no Ray imports.

    total = intercept + β·B·(tv + teacher_err) + c·(N+M)^(−1/2) + B·sqrt(log(1/δ) / (2(N+M)))

β = M/(N+M) with M = m_per_class·S fakes (S strata: the classes, or the slices of a continuous label).
``tv`` and ``teacher_err`` depend on ρ only; β, the complexity and the sample term on M only. Without a
fitted complexity (c = 0, intercept = 0) and B = 1 it bounds the 0-1 risk (classes) or the MAE in
normalised label units (a continuous label, ``num_classes`` a :class:`rayflow.labels.Continuous`)
minus the student's training error; ``vacuous`` flags total ≥ B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayflow.bound_terms import (
    FakeScores,
    RealScores,
    TVEstimate,
    _apply,
    _bc,
    _div,
    _iw_error,
    _normaliser,
    _prior,
    _what,
    cutoffs,
    kept_mask,
    label_error,
    label_space,
    real_mass_dropped,
    teacher_error_on_kept,
    tv_from_ratios,
)
from rayflow.filtering import check_rho
from rayflow.labels import LabelSpace

__all__ = [
    "FakeScores",
    "RealScores",
    "TVEstimate",
    "bootstrap",
    "bound_grid",
    "bound_terms",
    "cutoffs",
    "fit_complexity",
    "kept_mask",
    "label_error",
    "label_space",
    "real_mass_dropped",
    "teacher_error_on_kept",
    "tv_from_ratios",
]

_EPS = 1e-12


@dataclass
class _Prep:
    """Accepted fakes (stratum, loss, label error, normalised ratio) and reals, ready for any ρ."""
    C: int
    prior: np.ndarray
    fy: np.ndarray
    fl: np.ndarray
    fwrong: np.ndarray
    frt: np.ndarray
    ry: np.ndarray
    rl: np.ndarray
    rerr: np.ndarray
    rrt: np.ndarray
    cap: float
    clipped_share: float
    clipped_mass: float
    clip_q: float | None


def _prepare(fy, fr, fl, fwrong, ry, rr, rl, rerr, C, prior, clip_q, clip_cap) -> _Prep:
    norm, cs, cm = _normaliser(fy, fr, C, clip_q, clip_cap)
    return _Prep(C, prior, fy, fl, fwrong, _apply(fy, fr, norm), ry, rl, rerr, _apply(ry, rr, norm),
                 float(norm[1]), cs, cm, clip_q)


def _arrays(fake: FakeScores, real: RealScores, space: LabelSpace):
    """(stratum, ratio, loss, label error) of the accepted fakes, then of the reals."""
    acc = fake.accepted
    fr = fake.ratio[acc].astype(np.float64)
    if fake.accept_prob is not None:
        fr = fr / fake.accept_prob[acc]
    fy = fake.labels[acc]
    return (space.strata_of(fy), fr, fake.loss[acc].astype(np.float64), label_error(space, fake.pred[acc], fy),
            space.strata_of(real.labels), real.ratio.astype(np.float64), real.loss.astype(np.float64),
            label_error(space, real.pred, real.labels))


def _eval(p: _Prep, cut: np.ndarray, mode: str = "sum") -> dict[str, Any]:
    """The ρ-dependent terms at per-stratum cutoffs ``cut``; ``mode`` picks teacher_err (see bound_grid)."""
    C, pi = p.C, p.prior
    keep = p.fl <= cut[p.fy]
    yk, wk = p.fy[keep], p.frt[keep]
    n_acc, nk = _bc(p.fy, None, C), _bc(yk, None, C)
    q = _div(nk, n_acc, 0.0)
    rkeep = p.rl <= cut[p.ry]
    d = _div(_bc(p.ry, (~rkeep).astype(np.float64), C), _bc(p.ry, None, C), 0.0)
    qw = q[yk] * wk
    fake_part = _div(_bc(yk, np.abs(qw - 1.0), C), nk, 2.0)
    tv_c = np.minimum(1.0, np.where(nk > 0, 0.5 * (fake_part + d), 1.0))
    label_shift = 0.5 * float(np.abs(pi - 1.0 / C).sum())  # real prior vs the balanced fake view
    mass = _div(_bc(yk, qw, C), nk, 0.0)
    s, s2 = _bc(yk, wk, C), _bc(yk, wk ** 2, C)
    ess_c = _div(s ** 2, s2, 0.0)
    dis = float(np.sum(pi * _div(_bc(yk, p.fwrong[keep], C), nk, 1.0)))
    iw, miss = _iw_error(p.ry, p.rrt, p.rerr, rkeep, C, pi, p.clip_q)
    used = "disagree" if mode == "disagree" or not np.isfinite(iw) else ("iw" if mode == "iw" else "disagree+iw")
    err = {"disagree": dis, "iw": iw, "disagree+iw": min(1.0, dis + iw)}[used]
    return {"tv": min(1.0, float(np.sum(pi * tv_c)) + label_shift), "tv_fake_part": 0.5 * float(np.sum(pi * fake_part)),
            "real_dropped": float(np.sum(pi * d)), "label_shift": label_shift,
            "mass_gap": float(abs(np.sum(pi * (mass + d)) - 1.0)),
            "teacher_disagree": dis, "teacher_err_iw": iw, "iw_classes_missing": miss, "teacher_err_used": used,
            "teacher_err": err,
            "kept_share": float(np.sum(pi * q)), "ess": float(ess_c.sum()),
            "ess_frac": float(ess_c.sum() / max(nk.sum(), 1.0)),
            "ess_min_class": float(ess_c[pi > 0].min()), "clipped_share": p.clipped_share,
            "clipped_mass": p.clipped_mass, "cap": p.cap, "kept_per_class_available": nk.astype(int).tolist()}


def _complexity(complexity: Any) -> tuple[float, float, bool]:
    """-> (c, intercept, fitted) from None, a number c, or a :func:`fit_complexity` result."""
    if complexity is None:
        return 0.0, 0.0, False
    if isinstance(complexity, dict):
        c, a = float(complexity["c"]), float(complexity.get("intercept", 0.0))
    else:
        c, a = float(complexity), 0.0
    if not (c >= 0 and math.isfinite(c) and math.isfinite(a)):
        raise ValueError(f"complexity: c must be a finite number >= 0, got {c}")
    return c, a, True


def _assemble(ev: dict, rho: float, m: int, n_real: int, C: int, delta: float, B: float, cx,
              real_fraction: float | None = None) -> dict[str, Any]:
    """``C``: the number of strata a view takes ``m`` fakes of each. ``real_fraction``: the trainer's
    share of reals per batch (the fakes' weight is then β = 1 − real_fraction whatever M is); None: a
    uniform draw from the union, β = M/(N+M). McDiarmid on the β-weighted empirical risk gives the
    effective sample size n_eff = 1/((1−β)²/N + β²/M), which is N+M for the uniform union."""
    M = m * C
    n = n_real + M
    beta = M / n if real_fraction is None else 1.0 - float(real_fraction)
    n_eff = 1.0 / ((1.0 - beta) ** 2 / n_real + beta ** 2 / M)
    c, a, fitted = cx
    t = dict(ev, rho=float(rho), m_per_class=int(m), n_real=int(n_real), n_fake=int(M), n_total=int(n),
             n_effective=float(n_eff), real_fraction=None if real_fraction is None else float(real_fraction),
             delta=float(delta), B=float(B), beta=beta, sample=B * math.sqrt(math.log(1.0 / delta) / (2.0 * n_eff)),
             complexity=c / math.sqrt(n_eff), complexity_c=c, complexity_fitted=fitted, intercept=a)
    t["divergence"] = beta * B * (t["tv"] + t["teacher_err"])
    t["total"] = a + t["divergence"] + t["complexity"] + t["sample"]
    t["vacuous"] = bool(t["total"] >= B)
    t["feasible"] = bool(min(t["kept_per_class_available"]) >= m)
    return t


def _check(fake, real, burnin, n_real, num_classes, delta, B, ms=()) -> LabelSpace:
    space = label_space(num_classes)
    if not isinstance(n_real, (int, np.integer)) or n_real <= 0:
        raise ValueError(f"n_real must be a positive integer (real training images), got {n_real!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not B > 0:
        raise ValueError(f"B (loss bound) must be > 0, got {B}")
    for m in ms:
        if not isinstance(m, (int, np.integer)) or m <= 0:
            raise ValueError(f"m_per_class must be a positive integer, got {m!r}")
    if real is None:
        raise ValueError("real: held-out real scores are needed (the filter's dropped real mass)")
    fake.validate(space)
    real.validate(space)
    if len(burnin) != 2:
        raise ValueError("burnin must be a (loss, labels) pair")
    return space


def bound_grid(fake: FakeScores, real: RealScores, burnin: tuple[Any, Any], rhos: Sequence[float],
               ms: Sequence[int], n_real: int, num_classes: int | LabelSpace, delta: float = 0.05, B: float = 1.0,
               complexity: Any = None, *, class_prior: Any = None, clip_q: float | None = 0.999,
               clip_cap: float | None = None, teacher_mode: str = "sum",
               real_fraction: float | None = None) -> list[dict[str, Any]]:
    """Term dicts (see :func:`bound_terms`) for every (ρ, M) in ``rhos × ms``, ρ-major. ``real_fraction``:
    the trainer's share of reals per batch (None: a uniform draw from the union). ``teacher_mode``:
    ``"sum"`` (default: disagreement + importance-weighted error, the triangle-inequality bound),
    ``"disagree"`` (assumes a perfect teacher) or ``"iw"``; ``teacher_err_used`` says which was used.
    ``num_classes``: the class count, or the label space (a continuous label: strata, one global
    cutoff, MAE label errors; docs/bound.md "Regression"); ``class_prior`` weighs the strata."""
    if teacher_mode not in ("sum", "disagree", "iw"):
        raise ValueError(f"teacher_mode must be 'sum', 'disagree' or 'iw', got {teacher_mode!r}")
    rhos = [check_rho(r) for r in rhos]
    _check_real_fraction(real_fraction)
    space = _check(fake, real, burnin, n_real, num_classes, delta, B, ms)
    S = space.num_strata
    prior = _prior(class_prior, S)
    missing = np.flatnonzero((_bc(space.strata_of(real.labels), None, S) == 0) & (prior > 0))
    if len(missing):
        raise ValueError(f"RealScores.labels: no held-out real image of {_what(space)} {missing.tolist()[:10]}")
    p = _prepare(*_arrays(fake, real, space), S, prior, clip_q, clip_cap)
    cx = _complexity(complexity)
    out = []
    for rho in rhos:
        ev = _eval(p, cutoffs(burnin[0], burnin[1], rho, space), teacher_mode)
        out += [_assemble(ev, rho, m, n_real, S, delta, B, cx, real_fraction) for m in ms]
    return out


def bound_terms(fake: FakeScores, real: RealScores, burnin: tuple[Any, Any], rho: float, m_per_class: int,
                n_real: int, num_classes: int | LabelSpace, delta: float = 0.05, B: float = 1.0,
                complexity: Any = None, *,
                class_prior: Any = None, clip_q: float | None = 0.999, clip_cap: float | None = None,
                teacher_mode: str = "sum", real_fraction: float | None = None) -> dict[str, Any]:
    """Every term of the bound at one view (ρ, M = m_per_class per class); keys in docs/bound.md."""
    return bound_grid(fake, real, burnin, [rho], [m_per_class], n_real, num_classes, delta, B, complexity,
                      class_prior=class_prior, clip_q=clip_q, clip_cap=clip_cap, teacher_mode=teacher_mode,
                      real_fraction=real_fraction)[0]


def _check_real_fraction(real_fraction: float | None) -> None:
    if real_fraction is not None and not 0.0 < float(real_fraction) <= 1.0:
        raise ValueError(f"real_fraction must be in (0, 1] (the share of reals per batch), got {real_fraction!r}")


def _strata(y: np.ndarray):
    order = np.argsort(y, kind="stable")
    ys = y[order]
    counts = np.bincount(ys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts[ys], counts[ys]


def bootstrap(fake: FakeScores, real: RealScores, burnin: tuple[Any, Any], rho: float, m_per_class: int,
              n_real: int, num_classes: int | LabelSpace, delta: float = 0.05, B: float = 1.0,
              complexity: Any = None, *,
              n_boot: int = 200, seed: int = 0, level: float = 0.95, class_prior: Any = None,
              clip_q: float | None = 0.999, clip_cap: float | None = None, teacher_mode: str = "sum",
              real_fraction: float | None = None) -> dict[str, Any]:
    """Percentile intervals of ``total``, ``tv`` and ``teacher_err``: resample the accepted fakes and
    the held-out reals with replacement within each class (class counts fixed); the burn-in cutoffs
    are held fixed. -> {point, total: (lo, hi), tv, teacher_err, samples, n_boot, level}. A continuous
    label resamples within each stratum."""
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 2) or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap needs n_boot >= 2 and level in (0, 1), got {n_boot}, {level}")
    point = bound_terms(fake, real, burnin, rho, m_per_class, n_real, num_classes, delta, B, complexity,
                        class_prior=class_prior, clip_q=clip_q, clip_cap=clip_cap, teacher_mode=teacher_mode,
                        real_fraction=real_fraction)
    space = label_space(num_classes)
    S = space.num_strata
    arrs = _arrays(fake, real, space)
    prior, cx = _prior(class_prior, S), _complexity(complexity)
    cut = cutoffs(burnin[0], burnin[1], rho, space)
    (fo, fs, fc), (ro, rs, rc) = _strata(arrs[0]), _strata(arrs[4])
    rng = np.random.default_rng(seed)
    keys = ("total", "tv", "teacher_err")
    samples = {k: np.empty(n_boot) for k in keys}
    for b in range(n_boot):
        fi = fo[fs + (rng.random(len(fo)) * fc).astype(np.int64)]
        ri = ro[rs + (rng.random(len(ro)) * rc).astype(np.int64)]
        f = [a[fi] for a in arrs[:4]]
        r = [a[ri] for a in arrs[4:]]
        p = _prepare(*f, *r, S, prior, clip_q, clip_cap)
        t = _assemble(_eval(p, cut, teacher_mode), rho, m_per_class, n_real, S, delta, B, cx, real_fraction)
        for k in keys:
            samples[k][b] = t[k]
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    out = {k: tuple(float(v) for v in np.percentile(samples[k], [lo, hi])) for k in keys}
    return dict(out, point=point, samples=samples, n_boot=int(n_boot), level=float(level))


def fit_complexity(points: Sequence[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """Least squares of ``measured − rest = intercept + c·n_eff^(−1/2)`` with c ≥ 0, where ``rest`` is a
    term dict's total without its complexity and intercept. FITTED, not a bound: pass the result as
    ``complexity=`` to :func:`bound_terms` to rank views by a bound calibrated on a few full trials.
    -> {c, intercept, rmse, n_points, rank_corr, clamped, fitted=True}."""
    if len(points) < 2:
        raise ValueError(f"fit_complexity: needs at least 2 (terms, measured error) points, got {len(points)}")
    try:
        x = np.array([t.get("n_effective", t["n_total"]) ** -0.5 for t, _ in points], np.float64)
        rest = np.array([t["total"] - t["complexity"] - t["intercept"] for t, _ in points], np.float64)
        meas = np.array([float(e) for _, e in points], np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"fit_complexity: points must be (bound_terms dict, measured error) pairs ({e})") from None
    if not np.all(np.isfinite(meas)):
        raise ValueError("fit_complexity: measured errors must be finite")
    if np.ptp(x) <= 0:
        raise ValueError("fit_complexity: all points have the same effective sample size; c is not identifiable "
                         "(vary M)")
    y = meas - rest
    (a, c), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)
    clamped = bool(c < 0)
    if clamped:
        a, c = float(y.mean()), 0.0
    pred = a + c * x + rest
    rank = lambda v: np.argsort(np.argsort(v)).astype(np.float64)
    rc = float(np.corrcoef(rank(pred), rank(meas))[0, 1]) if np.ptp(pred) > 0 and np.ptp(meas) > 0 else float("nan")
    return {"c": float(c), "intercept": float(a), "rmse": float(np.sqrt(np.mean((pred - meas) ** 2))),
            "n_points": len(points), "rank_corr": rc, "clamped": clamped, "fitted": True}

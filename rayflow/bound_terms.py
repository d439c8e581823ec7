"""Plug-in estimators of the terms of the cGAN-KD error bound (docs/bound.md). No Ray imports.

Inputs are per-draw scores of a fake pool (:class:`FakeScores`) and of held-out real images
(:class:`RealScores`). The density ratio is self-normalised **per conditioning stratum** over the
accepted fakes of that stratum (r̃ = r / mean r), clipped at a high quantile (``clip_q``) and/or a fixed
cap (``clip_cap``, in self-normalised units) and renormalised. Strata are combined with a prior
(default uniform: a view takes M fakes of every stratum). :mod:`rayflow.bound` assembles the bound.

Where the label space matters (``num_classes``: a class count or a :mod:`rayflow.labels` space): a
stratum is a class, or a slice of a continuous [0, 1] label; ``loss`` is the teacher's CE, or
|prediction − y|; cutoffs are per class, or one global ρ-quantile; the label error is 0-1
(prediction ≠ label), or |prediction − y| (the MAE's units). See docs/bound.md, "Regression".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rayflow.filtering import check_rho
from rayflow.labels import Classes, Continuous, LabelSpace, as_space

__all__ = [
    "FakeScores",
    "RealScores",
    "TVEstimate",
    "cutoffs",
    "kept_mask",
    "label_error",
    "label_space",
    "real_mass_dropped",
    "teacher_error_on_kept",
    "tv_from_ratios",
]

_EPS = 1e-12


def _arr(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1)


def label_space(num_classes: LabelSpace | int | dict) -> LabelSpace:
    """The label space of a ``num_classes`` argument: a positive class count, or a label space."""
    ok = (int, np.integer, dict, Classes, Continuous)
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, ok):
        raise ValueError(f"num_classes must be a positive integer or a label space, got {num_classes!r}")
    if isinstance(num_classes, (int, np.integer)) and num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return as_space(int(num_classes) if isinstance(num_classes, (int, np.integer)) else num_classes)


def _space_or_none(num_classes: LabelSpace | int | dict | None) -> LabelSpace | None:
    return None if num_classes is None else label_space(num_classes)


def label_error(space: LabelSpace, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per sample, the student's loss between two labels (float64): 0-1 for classes (the labels
    differ), |pred − y| for a continuous label (the MAE, in normalised units)."""
    if space.continuous:
        return np.abs(np.asarray(pred, np.float64) - np.asarray(y, np.float64))
    return (~space.agree(pred, y)).astype(np.float64)


def _strata(space: LabelSpace | None, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64) if space is None else space.strata_of(y)


def _labels(owner: str, name: str, y: np.ndarray, num_classes: LabelSpace | int | None, pred: bool = False) -> None:
    space = num_classes if isinstance(num_classes, (Classes, Continuous)) else None
    if space is not None and space.continuous:
        if y.dtype.kind not in "iuf":
            raise ValueError(f"{owner}.{name} must hold numbers (a continuous label), got dtype {y.dtype}")
        if len(y) and not np.all(np.isfinite(y)):
            raise ValueError(f"{owner}.{name} contains NaN or infinite values")
        if not pred and len(y) and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{owner}.{name} must be normalised to [0, 1], got range [{y.min():g}, {y.max():g}]")
        return
    if space is not None:
        num_classes = space.num_classes
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(f"{owner}.{name} must hold integer class ids")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{owner}.{name} must hold integer class ids, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"{owner}.{name} has negative class ids (min {y.min()})")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise ValueError(f"{owner}.{name} must be in [0, {num_classes}), got max {y.max()}")


def _no_nan(owner: str, name: str, a: np.ndarray, nonneg: bool = False) -> None:
    if a.dtype.kind not in "iufb":
        raise ValueError(f"{owner}.{name} must be numeric, got dtype {a.dtype}")
    bad = int(np.isnan(a).sum()) if a.dtype.kind == "f" else 0
    if bad:
        raise ValueError(f"{owner}.{name} contains NaN ({bad} of {len(a)} values)")
    if nonneg:
        if len(a) and not np.all(np.isfinite(a)):
            raise ValueError(f"{owner}.{name} contains infinite values")
        if len(a) and a.min() < 0:
            raise ValueError(f"{owner}.{name} has negative values (min {a.min():g}); density ratios are >= 0")


def _lengths(owner: str, **cols: np.ndarray | None) -> None:
    lens = {k: len(v) for k, v in cols.items() if v is not None}
    if len(set(lens.values())) > 1:
        raise ValueError(f"{owner}: length mismatch: " + ", ".join(f"{k}={n}" for k, n in lens.items()))
    if not next(iter(lens.values())):
        raise ValueError(f"{owner}: no samples")


@dataclass
class FakeScores:
    """Per draw of a fake pool, in pool order. ``accept_prob`` (optional) is the cDR-RS acceptance
    probability min(1, r/K_y) of each draw; when given, the ratio used w.r.t. the accepted
    distribution is ``ratio / accept_prob`` (the net was fitted against the raw generator)."""

    labels: np.ndarray  # conditioning class (or continuous label in [0, 1])
    ratio: np.ndarray  # r(x|y) = p_real / p_fake from the ratio net, >= 0
    accepted: np.ndarray  # passed cDR-RS (all True without subsampling)
    loss: np.ndarray  # teacher CE w.r.t. the conditioning class (or |prediction − y|): the filter's score
    pred: np.ndarray  # teacher argmax (or its prediction, clipped to [0, 1])
    accept_prob: np.ndarray | None = None

    def __post_init__(self) -> None:
        for k in ("labels", "ratio", "accepted", "loss", "pred", "accept_prob"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, _arr(v))

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, num_classes: LabelSpace | int | None = None) -> FakeScores:
        """``num_classes``: the class count (or None: any class id >= 0), or a label space."""
        _lengths("FakeScores", labels=self.labels, ratio=self.ratio, accepted=self.accepted, loss=self.loss,
                 pred=self.pred, accept_prob=self.accept_prob)
        _labels("FakeScores", "labels", self.labels, num_classes)
        _labels("FakeScores", "pred", self.pred, num_classes, pred=True)
        _no_nan("FakeScores", "ratio", self.ratio, nonneg=True)
        _no_nan("FakeScores", "loss", self.loss)
        if self.accepted.dtype != bool:
            if not np.isin(self.accepted, (0, 1)).all():
                raise ValueError("FakeScores.accepted must be boolean")
            self.accepted = self.accepted.astype(bool)
        if not self.accepted.any():
            raise ValueError("FakeScores.accepted: no draw was accepted")
        if self.accept_prob is not None:
            _no_nan("FakeScores", "accept_prob", self.accept_prob, nonneg=True)
            a = self.accept_prob[self.accepted]
            if (a <= 0).any() or (a > 1).any():
                raise ValueError("FakeScores.accept_prob must be in (0, 1] on accepted draws")
        return self


@dataclass
class RealScores:
    """Per held-out real image (never used to train the teacher, the ratio net or the student)."""

    labels: np.ndarray
    ratio: np.ndarray  # the same ratio net on the image's features, with its true label
    loss: np.ndarray  # teacher CE w.r.t. the true label (or |prediction − y|)
    pred: np.ndarray  # teacher argmax (or its prediction)

    def __post_init__(self) -> None:
        for k in ("labels", "ratio", "loss", "pred"):
            setattr(self, k, _arr(getattr(self, k)))

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, num_classes: LabelSpace | int | None = None) -> RealScores:
        _lengths("RealScores", labels=self.labels, ratio=self.ratio, loss=self.loss, pred=self.pred)
        _labels("RealScores", "labels", self.labels, num_classes)
        _labels("RealScores", "pred", self.pred, num_classes, pred=True)
        _no_nan("RealScores", "ratio", self.ratio, nonneg=True)
        _no_nan("RealScores", "loss", self.loss)
        return self


@dataclass(frozen=True)
class TVEstimate:
    tv: float  # ½·[E_g(1_A·|r̃ − 1/q|) + P_r(Aᶜ)], clamped to [0, 1]
    fake_part: float  # E_g(1_A·|r̃ − 1/q|) = mean over kept of |q·r̃ − 1|
    ess: float  # Kish effective sample size of the kept weights r̃
    ess_frac: float  # ess / number of kept draws
    clipped_share: float  # share of reference draws whose ratio hit the cap
    clipped_mass: float  # share of the (self-normalised) ratio mass removed by clipping
    cap: float  # the cap, in self-normalised units (inf: none)
    n: int


def cutoffs(burnin_loss: Any, burnin_labels: Any, rho: float, num_classes: LabelSpace | int) -> np.ndarray:
    """Per-stratum cutoffs ``(S,)`` from the filter burn-in, as the label space sets them (its
    ``cutoffs``: each class's ρ-quantile, ``filtering.class_cutoffs``; or one global ρ-quantile over
    every stratum, repeated, for a continuous label) at ρ < 1; ρ = 1 keeps everything (+inf), unlike
    ``class_cutoffs(…, 1.0, …)`` = the burn-in max, which would drop pool draws above it.
    ``burnin_labels``: the stratum (class) of each burn-in draw, or its continuous label."""
    space = label_space(num_classes)
    if check_rho(rho) == 1.0:
        return np.full(space.num_strata, np.inf)
    loss, lab = _arr(burnin_loss), _arr(burnin_labels)
    if len(loss) != len(lab):
        raise ValueError(f"burn-in: {len(loss)} losses but {len(lab)} labels")
    if space.continuous and lab.dtype.kind == "f":
        lab = space.strata_of(lab)
    else:
        _labels("burnin", "labels", lab, space.num_strata)
        lab = lab.astype(np.int64)
    S = space.num_strata
    order = np.argsort(lab, kind="stable")
    groups = np.split(loss[order], np.cumsum(np.bincount(lab, minlength=S)[:S])[:-1])
    return np.asarray(space.cutoffs(groups, rho), np.float64)


def kept_mask(fake: FakeScores, cut: np.ndarray, num_classes: LabelSpace | int | None = None) -> np.ndarray:
    """Draws a view at these cutoffs may take: accepted and ``loss <= cut[stratum]`` (``num_classes``:
    the label space; None: the labels are class ids)."""
    y = _strata(_space_or_none(num_classes), fake.labels)
    return fake.accepted & (fake.loss <= np.asarray(cut, np.float64)[y])


def _prior(class_prior: Any, C: int) -> np.ndarray:
    if class_prior is None:
        return np.full(C, 1.0 / C)
    p = _arr(class_prior).astype(np.float64)
    if len(p) != C or np.isnan(p).any() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"class_prior must be {C} non-negative weights with a positive sum")
    return p / p.sum()


def _bc(y: np.ndarray, w: Any, C: int) -> np.ndarray:
    return np.bincount(y, weights=w, minlength=C)[:C].astype(np.float64)


def _div(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), empty)


def _normaliser(y: np.ndarray, r: np.ndarray, C: int, clip_q: float | None, clip_cap: float | None):
    """Per-class self-normalisation, clip, renormalisation over a reference set (accepted fakes).
    -> (m1, cap, m2) for :func:`_apply`, clipped share, clipped mass."""
    if clip_q is not None and not (0.0 < clip_q <= 1.0):
        raise ValueError(f"clip_q must be in (0, 1] or None, got {clip_q}")
    if clip_cap is not None and not clip_cap > 0:
        raise ValueError(f"clip_cap must be > 0 or None, got {clip_cap}")
    n, s1 = _bc(y, None, C), _bc(y, r, C)
    zero = np.flatnonzero((n > 0) & (s1 <= 0))
    if len(zero):
        raise ValueError(f"ratio: every ratio of class(es) {zero.tolist()[:10]} is 0 (degenerate ratio net)")
    m1 = _div(s1, n, 1.0)
    r1 = r / m1[y]
    cap = float(np.quantile(r1, clip_q)) if clip_q is not None else np.inf
    cap = min(cap, float(clip_cap)) if clip_cap is not None else cap
    r2 = np.minimum(r1, cap)
    m2 = _div(_bc(y, r2, C), n, 1.0)
    return (m1, cap, m2), float((r1 > cap).mean()), float((r1 - r2).sum() / r1.sum())


def _apply(y: np.ndarray, r: np.ndarray, norm) -> np.ndarray:
    m1, cap, m2 = norm
    return np.minimum(r / m1[y], cap) / m2[y]


def tv_from_ratios(ratio_fake_kept: Any, kept_share: float = 1.0, real_dropped: float = 0.0,
                   clip_q: float | None = 0.999, clip_cap: float | None = None,
                   ratio_pool: Any = None) -> TVEstimate:
    """TV(p_r, p_g restricted to A) = ½·[E_g(1_A·|r̃ − 1/q|) + P_r(Aᶜ)] from the ratios of the kept draws.

    ``kept_share`` = q = P_g(A), ``real_dropped`` = P_r(Aᶜ). Normaliser and clip quantile come from
    ``ratio_pool`` (all base draws, kept or not: r̃ = r / mean_pool r) when given; otherwise from the
    kept ratios, rescaled so that q·mean_kept(r̃) = 1 − real_dropped (fake- and real-side estimates of
    P_r(A) agree). Both coincide at q = 1, real_dropped = 0.
    """
    r = _arr(ratio_fake_kept).astype(np.float64)
    if not len(r):
        raise ValueError("ratio_fake_kept: no kept draws")
    _no_nan("tv_from_ratios", "ratio_fake_kept", r, nonneg=True)
    q, d = float(kept_share), float(real_dropped)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"kept_share must be in (0, 1], got {kept_share}")
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"real_dropped must be in [0, 1], got {real_dropped}")
    ref = r if ratio_pool is None else _arr(ratio_pool).astype(np.float64)
    if ratio_pool is not None:
        _no_nan("tv_from_ratios", "ratio_pool", ref, nonneg=True)
    norm, cshare, cmass = _normaliser(np.zeros(len(ref), np.int64), ref, 1, clip_q, clip_cap)
    rt = _apply(np.zeros(len(r), np.int64), r, norm)
    if ratio_pool is None:
        rt *= (1.0 - d) / (q * rt.mean())
    fake_part = float(np.abs(q * rt - 1.0).mean())
    ess = float(rt.sum() ** 2 / max((rt ** 2).sum(), _EPS))
    return TVEstimate(tv=min(1.0, 0.5 * (fake_part + d)), fake_part=fake_part, ess=ess, ess_frac=ess / len(r),
                      clipped_share=cshare, clipped_mass=cmass, cap=float(norm[1]), n=len(r))


def _dropped_per_class(y: np.ndarray, real: RealScores, cut: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    n = _bc(y, None, C)
    return _div(_bc(y, (real.loss > cut[y]).astype(np.float64), C), n, np.nan), n


def real_mass_dropped(real: RealScores, cutoffs: Any, class_prior: Any = None,
                      num_classes: LabelSpace | int | None = None) -> float:
    """P_r(Aᶜ): Σ_y π_y · share of stratum-y held-out reals with teacher loss > cutoff_y (0 at ρ = 1).
    ``num_classes``: the label space (None: classes, as many as cutoffs)."""
    cut = _arr(cutoffs).astype(np.float64)
    C = len(cut)
    space = _space_or_none(num_classes)
    if space is not None and space.num_strata != C:
        raise ValueError(f"cutoffs: {C} values for {space.num_strata} strata")
    real.validate(space if space is not None else C)
    d, n = _dropped_per_class(_strata(space, real.labels), real, cut, C)
    p = _prior(class_prior, C)
    missing = np.flatnonzero((n == 0) & (p > 0))
    if len(missing):
        raise ValueError(f"RealScores.labels: no held-out real image of {_what(space)} {missing.tolist()[:10]}")
    return float(np.sum(p * np.nan_to_num(d)))


def _what(space: LabelSpace | None) -> str:
    return "stratum(s)" if space is not None and space.continuous else "class(es)"


def _iw_error(ry, rrt, rerr, rkept, C, prior, clip_q) -> tuple[float, int]:
    """Self-normalised importance-weighted teacher error over kept reals, w = 1_A / r̃ (clipped at
    its clip_q quantile), per class then prior-weighted over classes that have kept reals."""
    w = np.where(rkept, 1.0 / np.maximum(rrt, _EPS), 0.0)
    if clip_q is not None and rkept.any():
        w = np.minimum(w, np.quantile(w[rkept], clip_q))
    sw = _bc(ry, w, C)
    ok = (sw > 0) & (prior > 0)
    if not ok.any():
        return float("nan"), int((prior > 0).sum())
    e = _bc(ry, w * rerr, C)[ok] / sw[ok]
    return float(np.sum(prior[ok] * e) / prior[ok].sum()), int(((prior > 0) & ~ok).sum())


def teacher_error_on_kept(fake: FakeScores, kept_mask: Any, real: RealScores | None = None,
                          cutoffs: Any = None, *, num_classes: LabelSpace | int | None = None,
                          class_prior: Any = None, clip_q: float | None = 0.999,
                          clip_cap: float | None = None) -> dict[str, Any]:
    """Teacher label error on the kept fakes, in the student's loss units (:func:`label_error`).

    ``disagree``: Σ_y π_y · mean over kept stratum-y fakes of the label error between the teacher's
    label and the conditioning label (classes: the share with argmax ≠ label; continuous: the mean
    |prediction − y|).
    ``iw``: the teacher's label error w.r.t. the true label on held-out reals, reweighted to the
    kept-fake distribution, w = 1_A(x, y) / r̃(x|y) (needs ``real`` and ``cutoffs``; NaN otherwise).
    ``value`` (what :func:`rayflow.bound.bound_terms` uses): ``disagree + iw`` (triangle inequality,
    P(y ≠ y*) ≤ P(pred ≠ y) + P(pred ≠ y*), or E|y − y*| ≤ E|pred − y| + E|pred − y*|) when ``iw`` is
    available, else ``disagree`` (``used`` says which). Strata with no kept fake count as error 1.
    ``num_classes``: the class count (None: from the labels) or the label space.
    """
    space = label_space(num_classes) if num_classes is not None else Classes(int(fake.labels.max()) + 1)
    C = space.num_strata
    fake.validate(space)
    keep = _arr(kept_mask).astype(bool) & fake.accepted
    if len(keep) != len(fake):
        raise ValueError(f"kept_mask: length {len(keep)} but the pool holds {len(fake)} draws")
    prior = _prior(class_prior, C)
    y = space.strata_of(fake.labels)
    nk = _bc(y[keep], None, C)
    wrong = label_error(space, fake.pred[keep], fake.labels[keep])
    dis = float(np.sum(prior * _div(_bc(y[keep], wrong, C), nk, 1.0)))
    out = {"disagree": dis, "iw": float("nan"), "iw_classes_missing": 0, "used": "disagree", "value": dis}
    if real is None:
        return out
    if cutoffs is None:
        raise ValueError("teacher_error_on_kept: the importance-weighted estimate needs the cutoffs")
    real.validate(space)
    cut = _arr(cutoffs).astype(np.float64)
    acc = fake.accepted
    raw = fake.ratio[acc] / (fake.accept_prob[acc] if fake.accept_prob is not None else 1.0)
    norm, _, _ = _normaliser(y[acc], raw.astype(np.float64), C, clip_q, clip_cap)
    ry = space.strata_of(real.labels)
    rerr = label_error(space, real.pred, real.labels)
    iw, miss = _iw_error(ry, _apply(ry, real.ratio.astype(np.float64), norm), rerr, real.loss <= cut[ry], C, prior,
                         clip_q)
    out.update(iw=iw, iw_classes_missing=miss)
    if np.isfinite(iw):
        out.update(used="disagree+iw", value=min(1.0, dis + iw))
    return out

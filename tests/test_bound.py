"""The error-bound estimators (rayflow/bound.py, docs/bound.md): analytic TV of Gaussians, the filter,
the confidence term, the bootstrap, the complexity fit and input validation. Plain numpy, no Ray."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm

from rayflow.bound import (
    FakeScores,
    RealScores,
    bootstrap,
    bound_grid,
    bound_terms,
    cutoffs,
    fit_complexity,
    kept_mask,
    real_mass_dropped,
    teacher_error_on_kept,
    tv_from_ratios,
)
from rayflow.filtering import class_cutoffs

C = 4


def _loss(x, rng):
    """Teacher CE grows with x (the 'bad' fakes sit at large x)."""
    return np.log1p(np.exp(2.0 * (x - 1.0))) + 0.05 * rng.random(len(x))


def _world(n_fake=20000, n_real=2000, seed=0, bad=0.25, shift=3.0):
    """Reals x|y ~ N(0,1); fakes x|y ~ (1−bad)·N(0,1) + bad·N(shift,1), with the exact ratio.
    The teacher errs more often at high loss. Returns (fake, real, burnin)."""
    rng = np.random.default_rng(seed)

    def draw_fake(n):
        x = rng.normal(0.0, 1.0, n) + shift * (rng.random(n) < bad)
        r = norm.pdf(x) / ((1 - bad) * norm.pdf(x) + bad * norm.pdf(x, shift))
        return x, r

    def pred_of(y, loss):
        wrong = rng.random(len(y)) < 1.0 - np.exp(-loss)
        return np.where(wrong, (y + 1 + rng.integers(0, C - 1, len(y))) % C, y)

    y = rng.integers(0, C, n_fake)
    x, r = draw_fake(n_fake)
    loss = _loss(x, rng)
    fake = FakeScores(y, r, np.ones(n_fake, bool), loss, pred_of(y, loss))
    yr = np.arange(n_real) % C
    xr = rng.normal(0.0, 1.0, n_real)
    lr = _loss(xr, rng)
    rr = norm.pdf(xr) / ((1 - bad) * norm.pdf(xr) + bad * norm.pdf(xr, shift))
    real = RealScores(yr, rr, lr, pred_of(yr, lr))
    yb = np.repeat(np.arange(C), 500)
    xb, _ = draw_fake(len(yb))
    return fake, real, (_loss(xb, rng), yb)


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.mark.parametrize("mu", [0.5, 1.0, -1.5])
def test_tv_matches_two_gaussians(mu):
    rng = np.random.default_rng(1)
    x = rng.normal(mu, 1.0, 20000)  # fake N(mu, 1), real N(0, 1): r = p_r/p_g exactly
    est = tv_from_ratios(np.exp(-mu * x + mu ** 2 / 2))
    assert abs(est.tv - (2 * norm.cdf(abs(mu) / 2) - 1)) < 0.03
    assert 0 < est.ess <= 20000 and 0 < est.clipped_share <= 0.002 and est.clipped_mass > 0
    assert abs(tv_from_ratios(np.ones(1000)).tv) < 1e-12  # identical distributions


@pytest.mark.parametrize("mu,t", [(1.0, 1.5), (-1.0, 0.0)])
def test_tv_of_a_filtered_gaussian(mu, t):
    """TV(p_r, p_g restricted to A = {x < t}) against numerical integration, both normalisers."""
    g = np.linspace(-12, 14, 100001)
    q = norm.cdf(t - mu)
    true = 0.5 * np.trapezoid(np.abs(norm.pdf(g) - norm.pdf(g, mu) * (g < t) / q), g)
    rng = np.random.default_rng(2)
    x = rng.normal(mu, 1.0, 20000)
    r, A = np.exp(-mu * x + mu ** 2 / 2), x < t
    d = float((rng.normal(0, 1, 5000) >= t).mean())  # held-out reals the filter would drop
    assert abs(tv_from_ratios(r[A], A.mean(), d, ratio_pool=r).tv - true) < 0.03
    assert abs(tv_from_ratios(r[A], A.mean(), d).tv - true) < 0.03


def test_rho_one_means_no_cutoff(world):
    fake, real, burnin = world
    assert np.all(np.isinf(cutoffs(*burnin, 1.0, C)))
    np.testing.assert_array_equal(cutoffs(*burnin, 0.8, C), class_cutoffs(*burnin, 0.8, C))
    t = bound_terms(fake, real, burnin, 1.0, 100, 1000, C)
    assert t["real_dropped"] == 0.0 and real_mass_dropped(real, cutoffs(*burnin, 1.0, C)) == 0.0
    assert t["kept_per_class_available"] == np.bincount(fake.labels, minlength=C).tolist()
    assert t["kept_share"] == pytest.approx(1.0)
    per_class = [tv_from_ratios(fake.ratio[fake.labels == c]).tv for c in range(C)]
    assert t["tv"] == pytest.approx(np.mean(per_class), abs=1e-9)
    # the bad component (25 % of the fakes, far from the reals): TV ≈ 0.25·(1 − overlap)
    assert 0.2 < t["tv"] < 0.27


def test_filter_drops_the_worst_fakes_and_more_real_mass_as_rho_falls(world):
    fake, real, burnin = world
    dropped, disagree, tvs = [], [], []
    for rho in (1.0, 0.8, 0.7, 0.6, 0.4):
        cut = cutoffs(*burnin, rho, C)
        keep = kept_mask(fake, cut)
        for c in range(C):
            m = fake.labels == c
            assert abs(keep[m].mean() - rho) < 0.05
            if rho < 1:
                assert fake.loss[m & keep].max() <= cut[c] < fake.loss[m & ~keep].min()
        t = bound_terms(fake, real, burnin, rho, 100, 1000, C)
        assert t["kept_per_class_available"] == np.bincount(fake.labels[keep], minlength=C).tolist()
        assert t["real_dropped"] == pytest.approx(real_mass_dropped(real, cut))
        te = teacher_error_on_kept(fake, keep, real, cut, num_classes=C)
        assert te["used"] == t["teacher_err_used"] == "disagree+iw"
        assert te["value"] == pytest.approx(t["teacher_err"]) and te["disagree"] == pytest.approx(t["teacher_disagree"])
        dropped.append(t["real_dropped"])
        disagree.append(t["teacher_disagree"])
        tvs.append(t["tv"])
    assert all(a < b for a, b in itertools.pairwise(dropped))
    assert all(a > b for a, b in itertools.pairwise(disagree))
    assert tvs[1] < tvs[0] and tvs[-1] > min(tvs)  # dropping the bad fakes helps, then real mass is lost
    assert dropped[0] == 0.0


def test_bound_grows_as_delta_shrinks_and_plateaus_in_m(world):
    fake, real, burnin = world
    ts = [bound_terms(fake, real, burnin, 0.9, 100, 1000, C, delta=d) for d in (0.5, 0.1, 1e-2, 1e-4, 1e-8)]
    assert all(a["total"] < b["total"] for a, b in itertools.pairwise(ts))
    assert len({round(t["tv"] + t["teacher_err"], 12) for t in ts}) == 1
    t = ts[1]
    n = 1000 + 100 * C
    assert t["beta"] == pytest.approx(100 * C / n) and t["sample"] == pytest.approx(math.sqrt(math.log(10) / (2 * n)))
    assert t["complexity"] == 0 and not t["complexity_fitted"] and t["intercept"] == 0
    assert t["total"] == pytest.approx(t["beta"] * (t["tv"] + t["teacher_err"]) + t["sample"])
    big = bound_grid(fake, real, burnin, [0.9], [10, 10 ** 4, 10 ** 9], 1000, C, complexity=2.0)
    assert [g["feasible"] for g in big] == [True, False, False]
    assert big[-1]["total"] == pytest.approx(big[-1]["tv"] + big[-1]["teacher_err"], abs=1e-3)


def test_a_fixed_real_share_weighs_the_fakes_by_it_and_m_only_through_the_sample_term(world):
    """The trainer draws `real_fraction` of every batch from the reals: the fakes' weight β is
    1 − real_fraction whatever M is, and McDiarmid on the β-weighted risk gives the effective sample
    size 1/((1−β)²/N + β²/M) — N+M again for a uniform draw from the union (β = M/(N+M))."""
    fake, real, burnin = world
    rows = bound_grid(fake, real, burnin, [0.9], [1, 10, 100, 1000], 1000, C, real_fraction=0.25)
    assert [r["beta"] for r in rows] == [0.75] * 4
    assert len({round(r["divergence"], 12) for r in rows}) == 1  # M moves only the sample term
    assert all(a["sample"] > b["sample"] for a, b in itertools.pairwise(rows))
    M = 10 * C
    assert rows[1]["n_effective"] == pytest.approx(1 / (0.25 ** 2 / 1000 + 0.75 ** 2 / M))
    assert rows[1]["sample"] == pytest.approx(math.sqrt(math.log(20) / (2 * rows[1]["n_effective"])))
    uniform = bound_terms(fake, real, burnin, 0.9, 10, 1000, C)
    assert uniform["n_effective"] == pytest.approx(1000 + M) and uniform["real_fraction"] is None
    assert bound_terms(fake, real, burnin, 0.9, 10, 1000, C, real_fraction=1.0)["beta"] == 0.0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="real_fraction"):
            bound_terms(fake, real, burnin, 0.9, 10, 1000, C, real_fraction=bad)


def test_grid_matches_single_views(world):
    fake, real, burnin = world
    grid = bound_grid(fake, real, burnin, [1.0, 0.7], [50, 200], 1000, C, delta=0.01)
    assert [(g["rho"], g["m_per_class"]) for g in grid] == [(1.0, 50), (1.0, 200), (0.7, 50), (0.7, 200)]
    for g in grid:
        t = bound_terms(fake, real, burnin, g["rho"], g["m_per_class"], 1000, C, delta=0.01)
        assert t["total"] == pytest.approx(g["total"]) and t["tv"] == pytest.approx(g["tv"])
    d = bound_terms(fake, real, burnin, 0.7, 50, 1000, C, teacher_mode="disagree")
    assert d["teacher_err_used"] == "disagree" and d["teacher_err"] == d["teacher_disagree"] < grid[2]["teacher_err"]
    with pytest.raises(ValueError, match="teacher_mode"):
        bound_terms(fake, real, burnin, 0.7, 50, 1000, C, teacher_mode="max")


def test_accept_prob_corrects_the_ratio_for_the_subsampled_distribution():
    """Exact rejection sampling with the exact ratio makes the accepted draws ≈ real; the ratio must
    then be r/a. Using the raw r on accepted draws overstates TV."""
    rng = np.random.default_rng(3)
    n, mu = 40000, 0.7
    x = rng.normal(mu, 1.0, n)
    r = np.exp(-mu * x + mu ** 2 / 2)
    a = np.minimum(1.0, r / np.quantile(r, 0.995))
    acc = rng.random(n) < a
    y, loss = np.zeros(n, int), np.zeros(n)
    real = RealScores(np.zeros(2000, int), np.ones(2000), np.zeros(2000), np.zeros(2000, int))
    args = (real, (np.zeros(10), np.zeros(10, int)), 1.0, 10, 1000, 1)
    fixed = bound_terms(FakeScores(y, r, acc, loss, y, accept_prob=a), *args)
    naive = bound_terms(FakeScores(y, r, acc, loss, y), *args)
    assert fixed["tv"] < 0.02
    assert naive["tv"] > 0.1


def test_bootstrap_contains_the_estimate_and_narrows_with_more_samples():
    widths = []
    for n_fake, n_real in ((2000, 400), (20000, 4000)):
        fake, real, burnin = _world(n_fake, n_real, seed=4)
        b = bootstrap(fake, real, burnin, 0.8, 100, 1000, C, n_boot=100, seed=0)
        for k in ("total", "tv", "teacher_err"):
            assert b[k][0] <= b["point"][k] <= b[k][1]
        widths.append(b["total"][1] - b["total"][0])
        again = bootstrap(fake, real, burnin, 0.8, 100, 1000, C, n_boot=100, seed=0)
        assert again["total"] == b["total"]  # seeded
    assert 0 < widths[1] < 0.6 * widths[0]


def test_fit_complexity_recovers_c(world):
    fake, real, burnin = world
    grid = bound_grid(fake, real, burnin, [1.0, 0.8], [10, 100, 1000, 5000], 2000, C)
    c_true, a_true = 7.5, 0.03
    pts = [(t, a_true + t["total"] + c_true / math.sqrt(t["n_total"])) for t in grid]
    fit = fit_complexity(pts)
    assert fit["fitted"] and not fit["clamped"]
    assert fit["c"] == pytest.approx(c_true, rel=1e-6) and fit["intercept"] == pytest.approx(a_true, abs=1e-8)
    rng = np.random.default_rng(5)
    noisy = fit_complexity([(t, e + rng.normal(0, 1e-3)) for t, e in pts])
    assert noisy["c"] == pytest.approx(c_true, rel=0.15) and noisy["rank_corr"] > 0.9
    # the fitted bound reproduces the measurements; the flag says it is fitted
    t = bound_terms(fake, real, burnin, 0.8, 100, 2000, C, complexity=fit)
    assert t["complexity_fitted"] and t["total"] == pytest.approx(pts[5][1])
    assert fit_complexity([(t, e - 50 * t["n_total"] ** -0.5) for t, e in pts])["c"] == 0.0  # c >= 0
    with pytest.raises(ValueError, match="at least 2"):
        fit_complexity(pts[:1])
    with pytest.raises(ValueError, match="same effective sample size"):
        fit_complexity([pts[0], pts[4]])


def _bad(world, field, value):
    fake, real, _ = world
    obj = {"fake": fake, "real": real}[field.split(".")[0]]
    kw = {k: getattr(obj, k).copy() for k in obj.__dataclass_fields__ if getattr(obj, k) is not None}
    name = field.split(".")[1]
    kw[name] = value(kw[name])
    return type(obj)(**kw)


@pytest.mark.parametrize("field,value,match", [
    ("fake.ratio", lambda a: np.where(np.arange(len(a)) == 3, np.nan, a), "FakeScores.ratio contains NaN"),
    ("fake.ratio", lambda a: a - 2.0, "FakeScores.ratio has negative"),
    ("fake.loss", lambda a: a[:-1], "length mismatch.*loss="),
    ("fake.labels", lambda a: a + C, "FakeScores.labels"),
    ("real.ratio", lambda a: np.full(len(a), np.nan), "RealScores.ratio contains NaN"),
    ("real.loss", lambda a: a[:10], "RealScores: length mismatch"),
])
def test_invalid_scores_raise_naming_the_field(world, field, value, match):
    bad = _bad(world, field, value)
    fake, real, burnin = world
    fake, real = (bad, real) if field.startswith("fake") else (fake, bad)
    with pytest.raises(ValueError, match=match):
        bound_terms(fake, real, burnin, 0.9, 10, 1000, C)
    with pytest.raises(ValueError, match=match):
        bad.validate(C)


@pytest.mark.parametrize("kw,match", [
    ({"rho": 0.0}, "rho"), ({"rho": 1.5}, "rho"), ({"rho": float("nan")}, "rho"),
    ({"m_per_class": 0}, "m_per_class"), ({"m_per_class": -5}, "m_per_class"),
    ({"delta": 1.0}, "delta"), ({"n_real": 0}, "n_real"),
])
def test_invalid_view_raises(world, kw, match):
    fake, real, burnin = world
    args = {"rho": 0.9, "m_per_class": 10, "n_real": 1000, "num_classes": C} | kw
    with pytest.raises(ValueError, match=match):
        bound_terms(fake, real, burnin, **args)
    with pytest.raises(ValueError, match="ratio_fake_kept contains NaN"):
        tv_from_ratios(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="kept_share"):
        tv_from_ratios(np.ones(5), kept_share=0.0)


def test_bound_does_not_import_ray():
    code = "import sys, rayflow.bound; assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)

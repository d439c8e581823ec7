"""rayflow.search: space validation, searcher invariants, exact resume, and offline replay on synthetic grids."""

import json
import math
import pickle
import sys

import numpy as np
import pytest

from rayflow.search import (
    SEARCHERS,
    BoundGuidedSearcher,
    SearchSpace,
    compare,
    grid_best,
    make_searcher,
    pooled_std,
    replay,
    summary,
    trials_to_reach,
)

N_SEEDS = 20
pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- synthetic recorded grids
def _synthetic(seed: int = 0, seed_noise: float = 0.002, rugged: float = 0.004):
    """10 ρ × 8 M grid; error = bowl in ρ whose optimum drifts with log M, a plateau in M, and a fixed
    per-config rugged term (so a smooth model alone cannot pin the best); three student seeds."""
    space = SearchSpace.from_grids(
        rho=list(np.round(np.linspace(0.1, 1.0, 10), 3)), m=[int(v) for v in np.geomspace(500, 64000, 8).round()]
    )
    rng = np.random.default_rng(seed)
    true, recorded = {}, {}
    for c in space.grid():
        t = (math.log(c["m"]) - math.log(500)) / (math.log(64000) - math.log(500))
        e = 0.22 + 0.12 * (c["rho"] - (0.35 + 0.2 * t)) ** 2 + 0.04 * (1 - t) ** 2 + 0.01 * t**3
        e += rugged * rng.standard_normal()
        k = space.key(c)
        true[k] = e
        recorded[k] = list(e + seed_noise * rng.standard_normal(3))  # three student seeds
    return space, true, recorded


@pytest.fixture(scope="module")
def synth():
    return _synthetic()


def _noisy_prior(true, sign):
    """Per replay seed: the bound = sign · true error + N(0, 0.005²) (sign −1: a reversed, wrong bound)."""

    def prior(seed):
        rng = np.random.default_rng(100 + seed)
        return {k: sign * v + 0.005 * rng.standard_normal() for k, v in true.items()}

    return prior


def _informative(true):
    return _noisy_prior(true, 1.0)


def _reversed(true):
    return _noisy_prior(true, -1.0)


def _report(table, label):
    print(label, " ".join(f"{r['searcher']}={r['mean_trials']:.1f}" for r in table), file=sys.stderr)


# ----------------------------------------------------------------------------- space
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rho": (0.0, 1.0)}, r"ρ must be in \(0, 1\]"),
        ({"rho": (0.5, 1.5)}, r"ρ must be in \(0, 1\]"),
        ({"rho": (-0.1, 0.5)}, r"ρ must be in \(0, 1\]"),
        ({"m": (0, 1000)}, r"M \(fake samples per class\) must be an integer ≥ 1"),
        ({"m": (-5, 1000)}, r"M \(fake samples per class\)"),
        ({"rho": (0.9, 0.2)}, r"rho range has lo > hi"),
        ({"m": (5000, 100)}, r"m range has lo > hi"),
        ({"real_fraction": (0.0, 0.5)}, r"real_fraction must be in \(0.0, 1.0\]"),
        ({"kd_weight": (0.2, 1.1)}, r"kd_weight must be in \[0.0, 1.0\]"),
    ],
)
def test_space_rejects_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(**kwargs)


def test_space_rejects_bad_grids():
    with pytest.raises(ValueError, match="rho values"):
        SearchSpace.from_grids(rho=[0.0, 0.5], m=[100])
    with pytest.raises(ValueError, match="m values"):
        SearchSpace.from_grids(rho=[0.5], m=[0, 100])
    with pytest.raises(ValueError, match="outside"):
        SearchSpace(rho=(0.2, 0.5), grids={"rho": [0.1, 0.3]})


def test_space_grid_sample_contains_clip():
    space = SearchSpace(rho=(0.1, 1.0), m=(100, 10_000), kd_weight=(0.0, 1.0))
    assert space.dims == ("rho", "m", "kd_weight")
    g = space.grid(4, 3, n_kd_weight=2)
    assert len(g) == 24 and len({space.key(c) for c in g}) == 24
    assert all(space.contains(c) and isinstance(c["m"], int) for c in g)
    assert sorted({c["m"] for c in g}) == [100, 1000, 10_000]  # log spacing
    rng = np.random.default_rng(0)
    samples = [space.sample(rng) for _ in range(200)]
    assert all(space.contains(c) for c in samples)
    assert np.median([c["m"] for c in samples]) < 3000  # log-uniform, not uniform
    for bad in (
        {"rho": 0.0, "m": 500, "kd_weight": 0.5},
        {"rho": 0.5, "m": 50, "kd_weight": 0.5},
        {"rho": 0.5, "m": 500.5, "kd_weight": 0.5},
        {"rho": 0.5, "m": 500},
        {"rho": 1.2, "m": 500, "kd_weight": 0},
    ):
        assert not space.contains(bad)
        assert space.contains(space.clip(bad))
    assert space.clip({"rho": 2.0, "m": 1e9, "kd_weight": -1}) == {"rho": 1.0, "m": 10_000, "kd_weight": 0.0}
    c = {"rho": 0.5, "m": 500, "kd_weight": 0.25}
    assert space.from_key(space.key(c)) == c
    explicit = SearchSpace.from_grids(rho=[0.3, 0.6, 1.0], m=[1000, 5000])
    assert explicit.rho == (0.3, 1.0) and len(explicit.grid(50, 50)) == 6


# ----------------------------------------------------------------------------- searcher invariants
def _prior(c):
    return {"divergence": 0.1 * c["rho"], "total": (c["rho"] - 0.4) ** 2 + 1.0 / math.log(c["m"])}


@pytest.mark.parametrize("name", SEARCHERS)
def test_candidates_only_never_repeat(name, synth):
    space, _, recorded = synth
    cands = [space.from_key(k) for k in sorted(recorded)][::2]  # 40 of the 80 grid points
    allowed = {space.key(c) for c in cands}
    s = make_searcher(name, space, seed=3, candidates=cands, prior=_prior)
    seen, rng = [], np.random.default_rng(0)
    for _ in range(len(cands)):  # bounded: a searcher that repeats forever fails instead of hanging
        batch = [s.ask() for _ in range(3)]  # concurrent asks: pending ones must not be re-proposed
        for c in batch:
            if c is not None:
                assert space.contains(c) and space.key(c) in allowed
                seen.append(space.key(c))
        for c in batch:
            if c is not None:
                s.tell(c, float(rng.uniform(0.2, 0.4)) if len(seen) % 7 else math.nan)  # some failed trials
        if any(c is None for c in batch):
            break
    assert len(seen) == len(set(seen)) == len(cands)
    assert s.ask() is None


@pytest.mark.parametrize("name", SEARCHERS)
def test_without_candidates_stays_in_space(name):
    space = SearchSpace(rho=(0.2, 0.9), m=(200, 20_000), real_fraction=(0.5, 1.0))
    s = make_searcher(name, space, seed=1, prior=_prior)
    keys = []
    for i in range(15):
        c = s.ask()
        assert c is not None and space.contains(c), c
        keys.append(space.key(c))
        s.tell(c, 0.3 + 0.1 * math.sin(i))
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", SEARCHERS)
def test_state_load_resumes_exactly(name, synth):
    space, true, recorded = synth
    cands = [space.from_key(k) for k in sorted(recorded)]
    make = lambda: make_searcher(name, space, seed=7, candidates=cands, prior=_prior)
    a = make()
    for _ in range(12):  # past TPE's 10 random start-up trials
        c = a.ask()
        a.tell(c, true[space.key(c)])
    pending = a.ask()  # one in flight when the search is killed
    saved = json.loads(json.dumps(a.state()))
    b = make()
    b.load(saved)
    assert [space.key(c) for c in b.pending] == [space.key(pending)]
    for s in (a, b):
        s.tell(pending, true[space.key(pending)])
    for _ in range(8):
        ca, cb = a.ask(), b.ask()
        assert ca == cb
        a.tell(ca, true[space.key(ca)])
        b.tell(cb, true[space.key(cb)])
    with pytest.raises(ValueError, match="differently configured"):
        make_searcher(name, space, seed=8, candidates=cands, prior=_prior).load(saved)


@pytest.mark.parametrize("name", SEARCHERS)
def test_pickle_and_release(name, synth):
    """Ray Tune pickles the search algorithm with the Tuner: a searcher must survive pickle as is."""
    space, true, recorded = synth
    cands = [space.from_key(k) for k in sorted(recorded)]
    a = make_searcher(name, space, seed=2, candidates=cands, prior=_prior)
    for _ in range(4):
        c = a.ask()
        a.tell(c, true[space.key(c)])
    lost = a.ask()
    b = pickle.loads(pickle.dumps(a))
    for s in (a, b):
        s.release(lost)  # a cancelled trial goes back to the pool
        assert space.key(lost) not in {space.key(c) for c in s.pending}
    for _ in range(5):
        ca, cb = a.ask(), b.ask()
        assert ca == cb
        a.tell(ca, true[space.key(ca)])
        b.tell(cb, true[space.key(cb)])


def test_make_searcher_errors(synth):
    space, _, _ = synth
    with pytest.raises(ValueError, match="unknown searcher"):
        make_searcher("hyperband", space)
    with pytest.raises(ValueError, match="needs prior"):
        make_searcher("bound", space)
    with pytest.raises(ValueError, match="outside the search space"):
        make_searcher("random", space, candidates=[{"rho": 0.05, "m": 500}])


def test_bound_starts_at_lowest_bound_and_accepts_partial_prior(synth):
    space, true, recorded = synth
    cands = [space.from_key(k) for k in sorted(recorded)]
    best_bound = min(true, key=true.get)
    s = BoundGuidedSearcher(space, dict(true), seed=0, candidates=cands)
    assert space.key(s.ask()) == best_bound
    partial = {k: v for i, (k, v) in enumerate(sorted(true.items())) if i % 3}  # a third missing: imputed
    s = BoundGuidedSearcher(space, partial, seed=0, candidates=cands)
    assert space.contains(s.ask())
    with pytest.raises(ValueError, match="no finite value"):
        BoundGuidedSearcher(space, lambda c: math.nan, candidates=cands)


# ----------------------------------------------------------------------------- replay helpers
def test_replay_helpers():
    rec = {(0.5, 100): [0.30, 0.32], (1.0, 100): [0.20, 0.22], (0.5, 1000): [0.25, 0.25]}
    assert grid_best(rec) == ((1.0, 100), pytest.approx(0.21))
    assert pooled_std(rec) == pytest.approx(math.sqrt((0.0002 + 0.0002) / 3))
    assert trials_to_reach([0.3, 0.25, 0.21], 0.21) == 3
    assert trials_to_reach([0.3, 0.25, 0.22], 0.21, tol=0.011) == 3
    assert trials_to_reach([0.3, 0.25], 0.21) is None
    space = SearchSpace.from_grids(rho=[0.5, 1.0], m=[100, 1000])
    cands = [space.from_key(k) for k in rec]  # 3 of the 4 grid points
    runs = replay(rec, lambda s: make_searcher("random", space, s, candidates=cands), n_seeds=4, noise="pick")
    assert all(sorted(r["keys"]) == sorted(rec) and len(r["curve"]) == 3 for r in runs)
    with pytest.raises(KeyError, match="not in the recorded grid"):
        replay(
            rec, lambda s: make_searcher("grid", space, s, shuffle=False), n_seeds=1, budget=4
        )  # proposes (0.5, 100)… (1.0, 1000)
    row = summary(runs, rec, "random", tol=0.0)
    assert row["n_seeds"] == 4 and row["reached"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_grid_finds_best_within_n(synth):
    space, _, recorded = synth
    n = len(recorded)
    table, curves = compare(recorded, None, space, names=("grid",), n_seeds=N_SEEDS, tol=0.0)
    for run in curves["grid"]:
        assert len(run["keys"]) == n and len(set(run["keys"])) == n  # exhausts the grid, no repeats
        assert run["trials_to_best"] is not None and run["trials_to_best"] <= n
        assert run["curve"][-1] == grid_best(recorded)[1]
    assert table[0]["reached"] == 1.0


# ----------------------------------------------------------------------------- the point: fewer trainings
def test_bound_beats_random_and_tpe_with_informative_prior(synth):
    space, true, recorded = synth
    n = len(recorded)
    table, _ = compare(
        recorded,
        None,
        space,
        names=("random", "tpe", "bound"),
        n_seeds=N_SEEDS,
        prior_for_seed=_informative(true),
        stop_at_target=True,
    )
    _report(table, "informative prior, mean trials-to-best:")
    rows = {r["searcher"]: r for r in table}
    assert rows["bound"]["mean_trials"] <= n / 3
    assert rows["bound"]["mean_trials"] < rows["random"]["mean_trials"]
    assert rows["bound"]["mean_trials"] < rows["tpe"]["mean_trials"]
    assert rows["bound"]["reached"] == 1.0
    # the bound is what helps: the same searcher with a flat (uninformative) bound needs more trials
    flat, _ = compare(
        recorded, {k: 0.5 for k in recorded}, space, names=("bound",), n_seeds=N_SEEDS, stop_at_target=True
    )
    _report(flat, "flat prior:")
    assert rows["bound"]["mean_trials"] < flat[0]["mean_trials"]


def test_bound_with_wrong_prior_degrades_but_finds_best(synth):
    space, true, recorded = synth
    n = len(recorded)
    for noise in ("mean", "pick"):
        table, curves = compare(
            recorded,
            None,
            space,
            names=("bound",),
            n_seeds=N_SEEDS,
            noise=noise,
            prior_for_seed=_reversed(true),
            stop_at_target=True,
        )
        _report(table, f"reversed prior ({noise}), mean trials-to-best:")
        for run in curves["bound"]:
            assert len(run["keys"]) == len(set(run["keys"]))
            if noise == "mean":  # exact values: the best is always found, within the grid size
                assert run["trials_to_best"] is not None and run["trials_to_best"] <= n
        assert table[0]["mean_trials"] <= n


def test_report_has_the_search_section_when_a_search_ran():
    from rayflow.report import render_report

    tune = {"searcher": "bound", "trials": [{}, {}], "chosen": {"rho": 0.7, "m_per_class": 100},
            "final": {"chosen": 80.1, "hand-set": 79.5, "hand_set": {"rho": 0.9}}}
    page = render_report({"rows": [], "search": {"grid": None, "tunes": [tune]}})
    assert "Choosing rho and M" in page and "bound searcher: 2 trials" in page and "80.1" in page
    assert "Choosing rho and M" not in render_report({"rows": [], "search": {"grid": None, "tunes": []}})


def test_search_section_reads_a_regression_objective():
    """A regression search (validation MAE, minimised) is shown as an MAE in the labels' unit, not as
    accuracy or error %; the grid's recorded errors are normalised MAEs, scaled by the label span."""
    from rayflow.data.labels import LabelRange
    from rayflow.labels import Continuous
    from rayflow.report.search_html import render_search
    from rayflow.tuning.objective import Objective
    from rayflow.tuning.record import format_grid

    obj = Objective(Continuous(LabelRange(0.0, 90.0, "deg"))).to_dict()
    tune = {"searcher": "grid", "trials": [{}], "chosen": {"rho": 0.8, "m": 5}, "objective": obj,
            "final": {"chosen": [6.1], "hand-set": [6.3], "hand_set": {"rho": 0.9}}}
    grid = {"recorded": [{"rho": r, "m": m, "val_error": [e, e + 0.002], "bound": b}
                         for (r, m, e, b) in ((1.0, 5, 0.06, 0.2), (0.8, 5, 0.05, 0.15), (0.8, 20, 0.07, 0.3))],
            "seed_noise": 0.0014, "spread": 0.02, "spearman_bound_vs_measured": 1.0, "nokd_val_error": [0.08],
            "replay": [{"searcher": "bound", "mean_trials": 1.0, "median_trials": 1.0, "fraction_of_grid": 0.33,
                        "reached": 1.0}], "curves": {"bound": [[0.051, 0.051, 0.051]]}, "objective": obj}
    page = render_search(grid, [tune])
    assert "test MAE (deg)" in page and "test accuracy" not in page
    assert "spread 1.80 MAE (deg)" in page  # 0.02 of the normalised range = 1.8 degrees
    text = format_grid(grid)
    assert "val MAE (deg) (seeds)" in text and "5.4000 5.5800" in text and "NOKD val MAE (deg) [7.2" in text


def test_asha_lets_a_trial_finish_at_max_t_and_counts_only_real_stops():
    """A trial at its last report must run on to commit its student (ASHA alone stops every trial
    at max_t), and ASHA's count of stopped trials must not include it; a weak trial at a rung is
    still stopped and counted."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from rayflow.executors.ray_tune import FinishingASHA

    sched = FinishingASHA(time_attr="samples_seen", metric="acc", mode="max", max_t=100, grace_period=25,
                          reduction_factor=2, brackets=1)
    trials = [SimpleNamespace(trial_id=str(i)) for i in range(3)]
    for t in trials:
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, trials[0], {"samples_seen": 25, "acc": 0.9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trials[1], {"samples_seen": 25, "acc": 0.1}) == TrialScheduler.STOP
    assert sched._num_stopped == 1
    for t in (25, 50, 100):
        assert sched.on_trial_result(None, trials[2], {"samples_seen": t, "acc": 0.95}) == TrialScheduler.CONTINUE
    assert sched._num_stopped == 1

"""A tune choice that survives validation noise (issue 29, item 4): each score's standard error, the
finalists re-scored on more seeds, the one-SE rule that keeps the prior's setting when tied, and the
intervals in tune-*.json and search.html. Planted scores and fake score functions: no student trains."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from rayflow.data.labels import LabelRange
from rayflow.labels import Classes, Continuous
from rayflow.tuning.choice import attach_se, binomial_se, decide, one_se_choice, pooled, preferred, settings
from rayflow.tuning.objective import Objective

pytestmark = pytest.mark.timeout(120)
ACC = Objective(Classes(10))
MAE = Objective(Continuous(LabelRange(0.0, 90.0, "deg")))
DIMS = ("rho", "m")


class Fixed(torch.nn.Module):
    """A 'model' whose outputs are given: the evaluation's known answer."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.register_buffer("out", out)

    def forward(self, x):
        return self.out[: len(x)]


def test_binomial_se_known_answer_and_the_evaluation_reports_it():
    assert binomial_se(80.0, 100) == pytest.approx(4.0)  # 100 sqrt(0.8 * 0.2 / 100)
    assert binomial_se(100.0, 50) == 0.0 and math.isnan(binomial_se(50.0, 0))
    from rayflow.data.imageset import ImageSet
    from rayflow.train.loop import evaluate
    from rayflow.train.tasks import Task

    labels = np.zeros(100, np.int64)
    out = torch.zeros(100, 2)
    out[80:, 1] = 1.0  # 80 of 100 right
    data = ImageSet(np.zeros((100, 1, 2, 2), np.uint8), labels, 2)
    m = evaluate(Fixed(out), data, Task.of(2), prefix="val_", spread=True)
    assert m["val_acc"] == pytest.approx(80.0) and m["val_se"] == pytest.approx(4.0) and m["val_n"] == 100
    assert "val_se" not in evaluate(Fixed(out), data, Task.of(2), prefix="test_")  # test metrics unchanged
    # a continuous label: the SE of the mean absolute error, std(|err|) / sqrt(n)
    err = np.array([0.1, 0.3, 0.1, 0.3], np.float32)
    reg = ImageSet(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4, np.float32), None)
    m = evaluate(Fixed(torch.from_numpy(err)[:, None]), reg, Task.of(None), prefix="val_", spread=True)
    assert m["val_mae"] == pytest.approx(0.2) and m["val_se"] == pytest.approx(0.1 / 2)


def test_trials_get_their_se_from_the_evaluation_else_binomial():
    rows = [{"rho": 0.5, "m": 10, "val_acc": 80.0, "val_se": 3.0, "val_n": 50},
            {"rho": 0.9, "m": 10, "val_acc": 80.0},  # a student evaluated before val_se existed
            {"rho": 0.9, "m": 20}]  # no score (failed)
    attach_se(rows, ACC, 100)
    assert (rows[0]["se"], rows[0]["n"]) == (3.0, 50) and rows[1]["se"] == pytest.approx(4.0) and "se" not in rows[2]
    reg = [{"rho": 0.5, "m": 10, "val_mae": 0.05}]
    attach_se(reg, MAE, 100)
    assert math.isnan(reg[0]["se"])  # unknown, never a made-up binomial SE


def _groups(obj, scores):
    """Planted settings: {(rho, m): (score, se)}."""
    rows = [{"rho": r, "m": m, obj.metric: v, "se": se, "artifact": "a"} for (r, m), (v, se) in scores.items()]
    return settings(rows, obj, DIMS, seed=0)


HAND = [("hand-set", {"rho": 0.9, "m": 30}), ("bound's best", {"rho": 0.3, "m": 50})]


def test_one_se_rule_keeps_the_prior_when_tied_and_the_best_when_clearly_better():
    tied = _groups(ACC, {(0.1, 50): (82.0, 1.0), (0.9, 30): (81.5, 1.2), (0.5, 10): (70.0, 2.0)})
    c = one_se_choice(tied, ACC, HAND, DIMS)
    assert c["chosen"] == {"rho": 0.9, "m": 30} and c["choice_rule"] == "one_se"
    assert "kept the hand-set setting" in c["choice_why"]
    clear = _groups(ACC, {(0.1, 50): (82.0, 1.0), (0.9, 30): (80.5, 1.2)})
    c = one_se_choice(clear, ACC, HAND, DIMS)
    assert c["chosen"] == {"rho": 0.1, "m": 50} and c["choice_rule"] == "best" and "clearly better" in c["choice_why"]
    # the hand-set setting not trialled: the bound's best, when tied
    bound = _groups(ACC, {(0.1, 50): (82.0, 1.0), (0.3, 50): (81.2, 1.0)})
    assert one_se_choice(bound, ACC, HAND, DIMS)["chosen"] == {"rho": 0.3, "m": 50}
    # minimised (validation MAE): tied means within one SE above the best
    mae = _groups(MAE, {(0.1, 50): (0.050, 0.006), (0.9, 30): (0.055, 0.006)})
    c = one_se_choice(mae, MAE, HAND, DIMS)
    assert c["chosen"] == {"rho": 0.9, "m": 30} and "deg" in c["choice_why"]
    mae = _groups(MAE, {(0.1, 50): (0.050, 0.002), (0.9, 30): (0.055, 0.006)})
    assert one_se_choice(mae, MAE, HAND, DIMS)["chosen"] == {"rho": 0.1, "m": 50}


def test_pooled_se_keeps_the_shared_image_noise_and_shrinks_the_seed_noise():
    mean, se = pooled([80.0, 82.0, 84.0], [3.0, 3.0, 3.0])
    assert mean == pytest.approx(82.0) and se == pytest.approx(math.sqrt(9.0 + 4.0 / 3))


def test_finalists_are_re_scored_on_more_seeds_and_their_mean_decides():
    calls: Counter = Counter()
    rescored = {(0.1, 50): 78.0, (0.5, 40): 84.0, (0.9, 30): 80.0, (0.7, 20): 90.0}

    def score(pairs):
        out = []
        for params, seed in pairs:
            calls[(params["rho"], params["m"], seed)] += 1
            out.append({"val_acc": rescored[(params["rho"], params["m"])], "val_se": 1.0, "artifact": f"s{seed}"})
        return out

    # (0.1, 50) leads on its single trial by luck; the hand-set (0.9, 30) ranks 4th: it joins the finalists
    groups = _groups(ACC, {(0.1, 50): (85.0, 1.0), (0.5, 40): (84.0, 1.0), (0.7, 20): (70.0, 1.0),
                           (0.9, 30): (65.0, 1.0)})
    out = decide(groups, ACC, HAND, DIMS, finalists=2, seeds=[1, 2], score=score, n_val=100)
    assert calls == Counter({(r, m, s): 1 for r, m in ((0.1, 50), (0.5, 40), (0.9, 30)) for s in (1, 2)})
    fin = {(f["rho"], f["m"]): f for f in out["finalists"]}
    assert set(fin) == {(0.1, 50), (0.5, 40), (0.9, 30)} and fin[(0.1, 50)]["seeds"] == [0, 1, 2]
    lucky = fin[(0.1, 50)]
    assert lucky["mean"] == pytest.approx((85 + 78 + 78) / 3) and lucky["artifacts"][1:] == ["s1", "s2"]
    assert out["chosen"] == {"rho": 0.5, "m": 40} and out["choice_rule"] == "best"
    assert out["prior_settings"]["hand-set"] == {"rho": 0.9, "m": 30}
    # off: no student trained, the single scores decide
    calls.clear()
    off = decide(_groups(ACC, {(0.1, 50): (85.0, 1.0), (0.5, 40): (84.0, 1.0)}), ACC, HAND, DIMS, finalists=0,
                 seeds=[1, 2], score=score, n_val=100)
    assert not calls and off["finalists"] == [] and off["chosen"] == {"rho": 0.1, "m": 50}


def test_preferred_is_hand_set_then_the_bounds_lowest_candidate():
    from rayflow.search import SearchSpace

    space = SearchSpace(rho=(0.1, 1.0), m=(10, 100))
    prior = {(0.1, 10): 0.4, (0.5, 40): 0.2, (1.0, 100): 0.3}
    assert preferred({"rho": 0.9, "m": 30}, prior, space) == [("hand-set", {"rho": 0.9, "m": 30}),
                                                              ("bound's best", {"rho": 0.5, "m": 40})]
    assert preferred({"rho": 0.9, "m": 30}, None, space) == [("hand-set", {"rho": 0.9, "m": 30})]


def test_new_tune_fields_leave_the_search_name_alone():
    """finalists / rescore_seeds act after the trials: a search's name (its Ray Tune experiment, its
    saved candidates and prior) is the one it had before they existed."""
    from rayflow.config import PipelineConfig
    from rayflow.tuning.search import search_name

    class R:
        def key_of(self, node):
            return "KEY"

    cfg = PipelineConfig()
    assert search_name(cfg, R()) == "tune-bound-0-KEY-97e4303f"  # as before issue 29 item 4
    cfg.tune = cfg.tune.model_copy(update={"finalists": 0, "rescore_seeds": 5})
    assert search_name(cfg, R()) == "tune-bound-0-KEY-97e4303f"


def test_search_page_shows_each_trials_interval_and_the_finalists(tmp_path, monkeypatch):
    import rayflow.report.search_html as sh
    from rayflow.store import open_store
    from rayflow.tuning.record import write_search_report

    drawn = {}
    real = sh.bound_scatter

    def spy(*a, **kw):
        drawn.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(sh, "bound_scatter", spy)
    trials = [{"rho": 0.1, "m": 50, "val_acc": 82.0, "se": 2.5, "n": 200, "artifact": "a", "samples_seen": 1},
              {"rho": 0.9, "m": 30, "val_acc": 81.5, "se": 2.6, "n": 200, "artifact": "b", "samples_seen": 1}]
    t = {"searcher": "bound", "trials": trials, "space": {"rho": [0.1, 1.0], "m": [10, 100]},
         "bound": {json.dumps([0.1, 50]): 0.3, json.dumps([0.9, 30]): 0.2}, "chosen": {"rho": 0.9, "m": 30},
         "choice_rule": "one_se", "choice_why": "tied within 1 SE of the best: kept the hand-set setting",
         "finalists": [{"rho": 0.1, "m": 50, "scores": [82.0, 80.0, 81.0], "seeds": [0, 1, 2], "mean": 81.0,
                        "se": 2.7, "artifacts": []}]}
    store = open_store(str(tmp_path))
    store.write_text("tune-bound.json", json.dumps(t))
    write_search_report(store)
    text = (tmp_path / "search.html").read_text()
    assert "<th>val accuracy % ± SE</th><th>finalist: mean ± SE over seeds</th>" in text
    assert "<td>82.00 ± 2.5</td><td>81.00 ± 2.7 (3 runs)</td>" in text
    assert "<td>81.50 ± 2.6</td><td></td><td>chosen" in text
    assert "choice (one_se rule): tied within 1 SE of the best: kept the hand-set setting; 1 finalists" in text
    assert drawn["err"] == pytest.approx([2.5, 2.6])  # error bars on the measured axis, in error %

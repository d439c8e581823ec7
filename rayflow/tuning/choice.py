"""How `rayflow tune` picks its setting from noisy validation scores (issue 29, item 4).

A trial's validation score is an estimate: on 200 validation images one image is half a point of
accuracy, and a 2-image lead once chose a setting that tested 0.57 points below the hand-set one.
So every score carries its standard error (over the validation images: `val_se` from the student's
evaluation, the binomial SE for accuracy; over seeds once re-scored), the top `tune.finalists`
settings are re-scored on `tune.rescore_seeds` more student seeds, and the one-standard-error rule
keeps the prior's setting (hand-set, else the bound's best) when it is tied with the best.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("rayflow")

# a function that scores (setting, student seed) pairs: one metrics dict each (the val metric, val_se, ...)
ScoreFn = Callable[[list[tuple[dict, int]]], list[dict]]


def binomial_se(acc_pct: float, n: int) -> float:
    """The standard error of an accuracy in % measured on `n` images: 100 sqrt(p (1 - p) / n)."""
    p = float(acc_pct) / 100.0
    return 100.0 * math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else math.nan


def se_of(metrics: dict, obj: Any, n_val: int) -> float:
    """A score's SE over the validation images: the evaluation's own (`val_se`), else, for a student
    evaluated before it was recorded, the binomial SE of its accuracy (a continuous label: unknown)."""
    se = metrics.get("se", metrics.get("val_se"))
    if isinstance(se, (int, float)) and math.isfinite(se):
        return float(se)
    return math.nan if obj.regression else binomial_se(metrics[obj.metric], int(metrics.get("val_n") or n_val))


def attach_se(results: list[dict], obj: Any, n_val: int) -> None:
    """Each scored trial gets `se` (in the metric's units) and `n` (validation images)."""
    for r in results:
        if obj.metric in r and isinstance(r[obj.metric], (int, float)):
            r["se"], r["n"] = se_of(r, obj, n_val), int(r.get("val_n") or n_val)


def pooled(scores: Sequence[float], ses: Sequence[float]) -> tuple[float, float]:
    """(mean, SE) of one setting's runs on the same validation images: the image noise is shared by
    the runs (more seeds do not shrink it), the seed noise shrinks with their number:
    SE^2 = mean(image SE^2) + var(scores) / runs."""
    n = len(scores)
    mean = sum(scores) / n
    img = [s for s in ses if math.isfinite(s)]
    var_img = sum(s * s for s in img) / len(img) if img else 0.0
    var_seed = sum((x - mean) ** 2 for x in scores) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var_img + var_seed / n)


def same(a: dict, b: dict, dims: Sequence[str]) -> bool:
    return all(d in a and d in b and math.isclose(float(a[d]), float(b[d]), rel_tol=1e-6, abs_tol=1e-9)
               for d in dims)


def settings(done: list[dict], obj: Any, dims: Sequence[str], seed: int) -> list[dict]:
    """Finished trials (student seed `seed`) grouped by setting (a searcher may repeat one), each
    with its runs' scores."""
    out: list[dict] = []
    for r in done:
        g = next((g for g in out if same(g["params"], r, dims)), None)
        if g is None:
            g = {"params": {d: r[d] for d in dims}, "scores": [], "ses": [], "seeds": [], "artifacts": []}
            out.append(g)
        g["scores"].append(float(r[obj.metric]))
        g["ses"].append(float(r.get("se", math.nan)))
        g["seeds"].append(seed)
        g["artifacts"].append(r.get("artifact"))
    for g in out:
        g["score"], g["se"] = pooled(g["scores"], g["ses"])
    return out


def _rank(groups: list[dict], obj: Any) -> list[dict]:
    return sorted(groups, key=lambda g: -g["score"] if obj.mode == "max" else g["score"])


def rescore(groups: list[dict], obj: Any, k: int, seeds: Sequence[int], score: ScoreFn,
            keep: Sequence[dict], dims: Sequence[str], n_val: int) -> list[dict]:
    """The finalists (the top `k` settings, and the prior's settings that were trialled: the rule
    compares them on equal footing), each re-scored on `seeds`; their pooled mean and SE replace
    the single score. Returns the finalists."""
    if k <= 0 or not seeds:
        return []
    ranked = _rank(groups, obj)
    finals = ranked[:k] + [g for g in ranked[k:] if any(same(g["params"], p, dims) for p in keep)]
    pairs = [(g["params"], s) for g in finals for s in seeds]
    log.info("[tune] re-scoring %d finalists on %d more student seeds (%d students)", len(finals), len(seeds),
             len(pairs))
    metrics = iter(score(pairs))
    for g in finals:
        for s in seeds:
            m = next(metrics)
            g["scores"].append(float(m[obj.metric]))
            g["ses"].append(se_of(m, obj, n_val))
            g["seeds"].append(s)
            g["artifacts"].append(m.get("artifact"))
        g["score"], g["se"] = pooled(g["scores"], g["ses"])
        g["finalist"] = True
    return finals


def one_se_choice(groups: list[dict], obj: Any, preferred: Sequence[tuple[str, dict]],
                  dims: Sequence[str]) -> dict:
    """The one-standard-error rule: the settings within one SE (the best's) of the best are tied;
    the first prior setting among them is kept, else the best. Returns {chosen, choice_rule,
    choice_why}."""
    best = _rank(groups, obj)[0]
    tol = best["se"] if math.isfinite(best["se"]) else 0.0
    tied = [g for g in groups if abs(g["score"] - best["score"]) <= tol]
    shown = f"{obj.describe(best['score'])} ± {obj.shown(tol):.3g}"
    for name, p in preferred:
        if same(best["params"], p, dims):
            return {"chosen": best["params"], "choice_rule": "best",
                    "choice_why": f"the best on validation ({shown}) is the {name} setting"}
        hit = next((g for g in tied if same(g["params"], p, dims)), None)
        if hit is not None:
            return {"chosen": hit["params"], "choice_rule": "one_se",
                    "choice_why": f"tied within 1 SE of the best ({shown}; {obj.describe(hit['score'])}): "
                                  f"kept the {name} setting"}
    trialled = [n for n, p in preferred if any(same(g["params"], p, dims) for g in groups)]
    if trialled:
        why = f"clearly better: the {' and '.join(trialled)} setting more than 1 SE worse than the best ({shown})"
    else:
        why = f"the best on validation ({shown}); no prior setting among the compared ones"
    return {"chosen": best["params"], "choice_rule": "best", "choice_why": why}


def preferred(hand: dict, prior: dict[tuple, float] | None, space: Any) -> list[tuple[str, dict]]:
    """The prior's settings, in the order the rule prefers them: hand-set, then the bound's best."""
    out = [("hand-set", hand)]
    if prior:
        out.append(("bound's best", space.from_key(min(prior, key=prior.get))))
    return out


def student_scores(runner: Any, cfg: Any, node_of: Callable[[int], Any] | None = None) -> ScoreFn:
    """Scores (setting, seed) pairs with real students: a trial's node (`node_of(seed)`; the cGAN-KD
    student by default) on the validation split, trained together through the executor and
    committed like any trial's student."""
    def score(pairs: list[tuple[dict, int]]) -> list[dict]:
        from rayflow.ablation import CGAN_KD
        from rayflow.tuning.search import with_params

        node = node_of or CGAN_KD.student
        jobs = [(runner.with_config(with_params(cfg, p, validation=True)), node(s)) for p, s in pairs]
        return [{**a.metrics, "artifact": str(a.uri)} for a in runner.batch(jobs)]
    return score


def decide(groups: list[dict], obj: Any, preferred: Sequence[tuple[str, dict]], dims: Sequence[str], *,
           finalists: int, seeds: Sequence[int], score: ScoreFn, n_val: int) -> dict:
    """Finalists re-scored, then the one-SE rule: what tune-*.json records about its choice."""
    finals = rescore(groups, obj, finalists, seeds, score, [p for _, p in preferred], dims, n_val)
    pool = finals or groups
    out = one_se_choice(pool, obj, preferred, dims)
    out["prior_settings"] = {name: p for name, p in preferred}
    out["finalists"] = [{**g["params"], "scores": g["scores"], "seeds": g["seeds"], "mean": g["score"],
                         "se": g["se"], "artifacts": g["artifacts"]} for g in finals]
    log.info("[tune] choice: %s", out["choice_why"])
    return out

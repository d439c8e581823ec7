"""The function-matching baseline's own validation search: as many trials as cGAN-KD's search.

Why: a baseline tuned less than the method it is compared with flatters the method (issue 29). `rayflow
tune` spends `tune.trials` FM students on the validation split cGAN-KD's trials use, over the mixing
strength (`function_matching.alpha`, log-spaced over `tune.fm_alpha`, the hand-set value among them)
and, when cGAN-KD's search has it, the KD weight; all in one executor run (FM students need no Tune
scheduler: no pool, no ASHA rungs). The choice follows cGAN-KD's rules (choice.py: finalists re-scored
on more seeds, the one-SE rule keeping the hand-set setting), and tune's final test retrains the chosen
setting on every labelled image beside cGAN-KD's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from rayflow.config import PipelineConfig

log = logging.getLogger("rayflow")

FM_FIELDS = ("fm_alpha",)  # tune fields that act after cGAN-KD's trials: not in the search's name
GOLDEN = (math.sqrt(5) - 1) / 2


def fm_dims(cfg: PipelineConfig) -> list[str]:
    return ["fm_alpha"] + (["kd_weight"] if cfg.tune.kd_weight else [])


def fm_candidates(cfg: PipelineConfig) -> list[dict]:
    """`tune.trials` settings: the hand-set one first, then alphas log-spaced over `tune.fm_alpha`
    (and KD weights spread over `tune.kd_weight` by the golden ratio, so no two trials share one)."""
    from rayflow.tuning.final import hand_set

    t, dims = cfg.tune, fm_dims(cfg)
    out = [hand_set(cfg, dims)]
    lo, hi = t.fm_alpha
    n = t.trials - 1
    for i in range(n):
        c = {"fm_alpha": round(lo * (hi / lo) ** ((i + 0.5) / n), 4)}
        if "kd_weight" in dims:
            k0, k1 = t.kd_weight
            c["kd_weight"] = round(k0 + (k1 - k0) * ((i + 1) * GOLDEN % 1), 4)
        out.append(c)
    return out


def fm_search(cfg: PipelineConfig, runner: Any, obj: Any, n_val: int) -> dict:
    """The trials and the choice, as tune-*.json records them under "fm". `runner`: the search's
    validation-split runner (its teacher)."""
    from rayflow.search.space import knob_text
    from rayflow.stages.graph import Node
    from rayflow.tuning.choice import attach_se, decide, settings, student_scores
    from rayflow.tuning.final import hand_set

    t, dims, s0 = cfg.tune, fm_dims(cfg), cfg.seeds[0]
    cands = fm_candidates(cfg)
    log.info("[tune] function matching: %d trials over %s on the same validation split", len(cands),
             ", ".join(dims))
    score = student_scores(runner, cfg, lambda seed: Node.of("fm", seed=seed))  # FM students, trained together
    trials = []
    for c, m in zip(cands, score([(c, s0) for c in cands])):
        r = {**c, obj.metric: float(m[obj.metric]), "artifact": m["artifact"]}
        r.update({k: m[k] for k in ("val_se", "val_n") if k in m})
        trials.append(r)
    attach_se(trials, obj, n_val)
    for r in trials:
        log.info("[tune] FM trial: %s -> %s ± %.3g", knob_text({d: r[d] for d in dims}), obj.describe(r[obj.metric]),
                 obj.shown(r["se"]))
    out: dict[str, Any] = {"dims": dims, "trials": trials}
    done = [r for r in trials if math.isfinite(r[obj.metric])]
    if done:
        out.update(decide(settings(done, obj, dims, s0), obj, [("hand-set", hand_set(cfg, dims))], dims,
                          finalists=t.finalists, seeds=[s0 + 1 + i for i in range(t.rescore_seeds)], score=score,
                          n_val=n_val))
    return out

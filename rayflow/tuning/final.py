"""The end of `rayflow tune`: the chosen and the hand-set settings retrained on all labelled images
and tested once per seed (the test set is looked at only here, after the choice)."""

from __future__ import annotations

from typing import Any

from rayflow.ablation import CGAN_KD
from rayflow.config import PipelineConfig
from rayflow.stages.graph import Node
from rayflow.tuning.search import KNOBS, with_params


def hand_set(cfg: PipelineConfig, dims) -> dict:
    """The config's own values of the searched knobs `dims` (the hand-set setting)."""
    from rayflow.tuning.record import getattr_path

    return {d: getattr_path(cfg, KNOBS[d]) for d in dims}


def final_test(cfg: PipelineConfig, chosen: dict, obj: Any = None, fm: dict | None = None) -> dict:
    """The chosen and the hand-set settings, each retrained on all labelled images and tested once
    per seed, beside NOKD and BLKD (and, with `fm`, the FM baseline at its own search's choice): test
    accuracy in %, or for a continuous label the test MAE in the labels' unit (`metric` names it;
    `measure` is how the CLI says it)."""
    from rayflow.pipeline import FM_ROW, Pipeline
    from rayflow.report import row
    from rayflow.tuning.objective import objective_of

    base = Pipeline(cfg)
    if obj is None:
        obj = objective_of(cfg, base.runner.splits.num_classes)

    hand = hand_set(cfg, chosen)
    out: dict[str, Any] = {"hand_set": hand, "chosen": chosen}
    if obj.regression:
        out.update(metric=obj.shown_key, measure=obj.shown_name)
    # the two settings' students and the baselines in one executor run (one Ray Train run, not three)
    settings = [(label, base.runner.with_config(with_params(cfg, params, validation=False)))
                for label, params in (("chosen", chosen), ("hand-set", hand))]
    pairs = [(r, CGAN_KD.student(s)) for _, r in settings for s in cfg.seeds]
    if fm is not None:  # FM at its search's choice (fm_search.py; tune-*.json has it under "fm")
        settings.append(("FM, chosen", base.runner.with_config(with_params(cfg, fm, validation=False))))
        pairs += [(settings[-1][1], Node.of("fm", seed=s)) for s in cfg.seeds]
    bplan = base.baseline_plan()
    arts = base.runner.batch(pairs + [(r, n) for _, _, r, n in bplan])
    for k, (label, _) in enumerate(settings):
        out[label] = [obj.shown(a.metrics[obj.test_metric]) for a in arts[k * len(cfg.seeds):(k + 1) * len(cfg.seeds)]]
    rows = [row(label, a, seed) for (seed, label, _, _), a in zip(bplan, arts[len(pairs):])]
    for name in ("NOKD student", "BLKD student", FM_ROW, "perfect generator (oracle)"):
        out[name] = [obj.shown(r[obj.test_metric]) for r in rows if r["model"] == name and obj.test_metric in r]
    return out

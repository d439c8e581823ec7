"""`rayflow tune`: search (rho, M) on validation data, then retrain the choice on all labelled images.

Trials are graph nodes with overrides: one cGAN-KD student trained on a view of the run's scored pool,
scored on `tune.val_fraction` of the labelled images (the test set is never looked at while choosing).
Upstream artifacts (teacher, GAN, ratio net, pool; on the validation split) are built once in the
driver before the first trial; every trial then only selects its view and trains its student.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

from rayflow.ablation import CGAN_KD
from rayflow.config import PipelineConfig

log = logging.getLogger("rayflow")

TRIAL_CPUS = 0.01  # a Tune trial's own resources (Ray refuses a zero-resource trial)
KNOBS = {"rho": "filter.rho", "m": "synth.m_per_class", "real_fraction": "fake.real_fraction",
         "kd_weight": "fake.kd_weight"}


def space_of(cfg: PipelineConfig):
    from rayflow.search import SearchSpace

    t = cfg.tune
    return SearchSpace(rho=tuple(t.rho), m=tuple(t.m_per_class), real_fraction=t.real_fraction,
                       kd_weight=t.kd_weight)


def with_params(cfg: PipelineConfig, params: dict, validation: bool) -> PipelineConfig:
    """`cfg` with a trial's knobs set; `validation`: hold out `tune.val_fraction` of the labelled
    images and report on them `tune.evals` times (ASHA's rungs)."""
    raw = cfg.model_dump(mode="json")
    for name, value in params.items():
        if name in KNOBS:
            section, field = KNOBS[name].split(".")
            raw[section][field] = value
    raw["filter"]["enabled"] = True
    if validation:
        raw["data"]["val_fraction"] = cfg.tune.val_fraction
        raw["student"]["train"]["eval_every"] = max(1, cfg.student.train.steps // cfg.tune.evals)
        raw["runtime"]["checkpoint_every"] = 0  # every report of a trial carries its validation score (ASHA)
    return PipelineConfig.model_validate(raw)


def run_trial(params: dict, *, base: dict) -> dict:
    """One trial: the cGAN-KD student on real + view(rho, M), scored on the validation images."""
    from rayflow.stages.runner import Runner

    cfg = with_params(PipelineConfig.model_validate(base), params, validation=True)
    # the trial itself holds TRIAL_CPUS: its student's workers take that much less (same threads), or
    # a student that wants every CPU would wait forever behind its own trial
    sc = cfg.scaling
    cfg.scaling = sc.model_copy(update={"cpus_per_worker": sc.cpus_per_worker - TRIAL_CPUS / sc.num_workers,
                                        "threads_per_worker": sc.threads_per_worker or max(1, int(sc.cpus_per_worker))})
    art = Runner(cfg).artifact(CGAN_KD.student(cfg.seeds[0]))
    m = art.metrics
    return {"val_acc": float(m["val_acc"]), "samples_seen": int(m.get("samples_seen", 0)),
            "artifact": art.uri, "reused": bool(art.reused), "wall_s": float(m.get("wall_s", 0.0))}


def bound_prior(runner: Any, cfg: PipelineConfig, candidates: list[dict]) -> dict[tuple, float]:
    """The bound's total per candidate, from the pool of `runner` (the validation-mode run; no
    student trained)."""
    from rayflow.bound import bound_terms
    from rayflow.tuning.scores import bound_inputs

    b = bound_inputs(runner)
    space = space_of(cfg)
    return {space.key(c): float(bound_terms(b.fake, b.real, b.burnin, c["rho"], c["m"], b.n_real,
                                            b.num_classes)["total"]) for c in candidates}


def tune(cfg: PipelineConfig) -> dict:
    from rayflow.search import make_searcher
    from rayflow.stages.graph import Node
    from rayflow.stages.runner import Runner

    t0 = time.perf_counter()
    t, space = cfg.tune, space_of(cfg)
    candidates = space.grid(*t.grid)
    val_cfg = with_params(cfg, {}, validation=True)
    runner = Runner(val_cfg)
    log.info("[tune] building the validation-split teacher, GAN, ratio net and pool before the trials")
    runner.artifacts([Node.of("teacher"), Node.of("gan")] + ([Node.of("dre")] if cfg.dre.enabled else []))
    name = f"tune-{t.searcher}-{t.seed}-{runner.key_of(CGAN_KD.student(cfg.seeds[0]))}"
    prior = _saved_prior(runner, name, cfg, candidates) if t.searcher == "bound" else None
    searcher = make_searcher(t.searcher, space, seed=t.seed, candidates=candidates, prior=prior)
    steps, bs = cfg.student.train.steps, cfg.student.train.batch_size
    asha = {"max_t": steps * bs, "grace_period": max(1, steps * bs // t.evals), "reduction_factor": 2} \
        if t.asha else None
    cpus = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    total = float(cfg.runtime.num_cpus or os.cpu_count() or 1)
    log.info("[tune] %s searcher, %d trials over rho %s, M %s (%s executor)", t.searcher, t.trials, list(t.rho),
             list(t.m_per_class), runner.executor.name)
    results = runner.executor.tune(
        functools.partial(run_trial, base=cfg.model_dump(mode="json")), searcher=searcher, trials=t.trials,
        metric="val_acc", mode="max", to_error=_to_error, storage=runner.ray_storage(), name=name, asha=asha,
        max_concurrent=max(1, int(total // max(cpus, 1e-9))), trial_cpus=TRIAL_CPUS)
    for i, r in enumerate(results):
        log.info("[tune] trial %d: rho %.3f M %d -> val acc %.2f", i, r["rho"], r["m"], r["val_acc"])
    out = {"searcher": t.searcher, "trials": results, "space": space.to_dict(), "candidates": candidates,
           "bound": {json.dumps(list(k)): v for k, v in (prior or {}).items()}}
    done = [r for r in results if "val_acc" in r and r.get("samples_seen", 0) >= steps * bs]
    if done:
        best = max(done, key=lambda r: r["val_acc"])
        out["chosen"] = {k: best[k] for k in space.dims}
        out["final"] = final_test(cfg, out["chosen"])
    out["wall_s"] = time.perf_counter() - t0
    runner.store.write_text(f"tune-{t.searcher}.json", json.dumps(out, indent=2, default=float))
    from rayflow.tuning.record import write_search_report

    write_search_report(runner.store)
    return out


def _saved_prior(runner: Any, name: str, cfg: PipelineConfig, candidates: list[dict]) -> dict[tuple, float]:
    """The bound per candidate, computed once per search and kept beside it: a resumed search must
    see the very numbers its searcher's saved state was built on (a recomputation can differ in the
    last bits with the torch thread count)."""
    saved = runner.store.read_text(f"{name}.prior.json")
    if saved:
        return {tuple(k): v for k, v in json.loads(saved)}
    prior = bound_prior(runner, cfg, candidates)
    runner.store.write_text(f"{name}.prior.json", json.dumps([[list(k), v] for k, v in prior.items()]))
    return prior


def _to_error(val_acc: float) -> float:
    return 1.0 - float(val_acc) / 100.0


def final_test(cfg: PipelineConfig, chosen: dict) -> dict:
    """The chosen and the hand-set settings, each retrained on all labelled images and tested once
    per seed, beside NOKD and BLKD."""
    from rayflow.pipeline import Pipeline
    from rayflow.stages.runner import Runner

    hand = {k: v for k, v in {"rho": cfg.filter.rho, "m": cfg.synth.m_per_class,
                              "real_fraction": cfg.fake.real_fraction, "kd_weight": cfg.fake.kd_weight}.items()
            if k in chosen}
    out: dict[str, Any] = {"hand_set": hand, "chosen": chosen}
    for label, params in (("chosen", chosen), ("hand-set", hand)):
        runner = Runner(with_params(cfg, params, validation=False))
        arts = runner.artifacts([CGAN_KD.student(s) for s in cfg.seeds])
        out[label] = [float(a.metrics["test_acc"]) for a in arts]
    rows = Pipeline(cfg).baselines()
    for name in ("NOKD student", "BLKD student", "perfect generator (oracle)"):
        out[name] = [r["test_acc"] for r in rows if r["model"] == name]
    return out

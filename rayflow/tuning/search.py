"""`rayflow tune`: search (rho, M) on validation data, then retrain the choice on all labelled images.

Trials are graph nodes with overrides: one cGAN-KD student trained on a view of the run's scored pool,
scored on `tune.val_fraction` of the labelled images (the test set is never looked at while choosing):
validation accuracy (maximised), or for a continuous label the validation MAE (minimised; see
`objective.py`).
Upstream artifacts (teacher, GAN, ratio net, pool; on the validation split) are built once in the
driver before the first trial; every trial then only selects its view and trains its student.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from typing import Any

from rayflow.ablation import CGAN_KD
from rayflow.config import PipelineConfig
from rayflow.tuning.fm_search import FM_FIELDS
from rayflow.tuning.pools import bound_prior, servable

log = logging.getLogger("rayflow")

TRIAL_CPUS = 0.01  # a Tune trial's own resources (Ray refuses a zero-resource trial)
KNOBS = {"rho": "filter.rho", "m": "synth.m_per_class", "real_fraction": "fake.real_fraction",
         "kd_weight": "fake.kd_weight", "mix_alpha": "student.mix.alpha",
         "select_share": "student.select_fakes.share", "latent_scale": "synth.latent_scale",
         "fm_alpha": "function_matching.alpha"}  # fm_alpha: the FM baseline's own search (fm_search.py)
CHOICE_FIELDS = ("finalists", "rescore_seeds")  # tune fields that act after the trials (choice.py)


def space_of(cfg: PipelineConfig):
    from rayflow.search import SearchSpace

    t = cfg.tune
    return SearchSpace(rho=tuple(t.rho), m=tuple(t.m_per_class), real_fraction=t.real_fraction,
                       kd_weight=t.kd_weight, mix_alpha=t.mix_alpha,
                       select_share=t.select_share, latent_scale=t.latent_scale)


def with_params(cfg: PipelineConfig, params: dict, validation: bool) -> PipelineConfig:
    """`cfg` with a trial's knobs set; `validation`: hold out `tune.val_fraction` of the labelled
    images and report on them `tune.evals` times (ASHA's rungs)."""
    raw = cfg.model_dump(mode="json")
    for name, value in params.items():
        if name in KNOBS:
            *sections, field = KNOBS[name].split(".")
            node = raw
            for s in sections:
                node = node.setdefault(s, {})  # student.mix: absent from the dump while off
            node[field] = value
    raw["filter"]["enabled"] = True
    if validation:
        raw["data"]["val_fraction"] = cfg.tune.val_fraction
        raw["data"]["val_per_class"] = 0  # the trial's split replaces a run's own step-selection split ...
        raw["student"]["train"]["select"] = "last"  # ... and ASHA compares the trial's own rungs
        raw["student"]["train"]["eval_every"] = max(1, cfg.student.train.steps // cfg.tune.evals)
        raw["runtime"]["checkpoint_every"] = 0  # every report of a trial carries its validation score (ASHA)
    return PipelineConfig.model_validate(raw)


def run_trial(params: dict, *, base: dict, metric: str = "val_acc") -> dict:
    """One trial: the cGAN-KD student on real + view(rho, M), scored on the validation images
    (`metric`: val_acc, or val_mae for a continuous label)."""
    from rayflow.stages.runner import Runner

    cfg = with_params(PipelineConfig.model_validate(base), params, validation=True)
    # the trial itself holds TRIAL_CPUS: its student's workers take that much less (same threads), or
    # a student that wants every CPU would wait forever behind its own trial
    sc = cfg.scaling
    cfg.scaling = sc.model_copy(update={"cpus_per_worker": sc.cpus_per_worker - TRIAL_CPUS / sc.num_workers,
                                        "threads_per_worker": sc.threads_per_worker or max(1, int(sc.cpus_per_worker))})
    from rayflow.tuning.choice import se_of
    from rayflow.tuning.objective import objective_of

    runner = Runner(cfg)
    art = runner.artifact(CGAN_KD.student(cfg.seeds[0]))
    m, splits = art.metrics, runner.splits
    n = int(m.get("val_n") or len(splits.val))  # the score's SE over the validation images (choice.py)
    # a committed student ran all its steps, also one resumed from a checkpoint at its last step (whose
    # final metrics carry no samples_seen): it must still count as a finished trial
    full = cfg.student.train.steps * cfg.student.train.batch_size
    return {metric: float(m[metric]), "se": se_of(m, objective_of(cfg, splits.num_classes), n), "n": n,
            "samples_seen": int(m.get("samples_seen") or full),
            "artifact": art.uri, "reused": bool(art.reused), "wall_s": float(m.get("wall_s", 0.0))}


def with_cleaner_visible(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg`, with the embedded Ray's dashboard on when ASHA may stop Ray Tune trials.

    A stopped trial takes its student's Train controller down with it; the controller's placement group
    (the student's CPUs) outlives it until Train's detached `PlacementGroupCleaner` sees the controller
    dead, which it asks through Ray's state API, i.e. the dashboard. Without one the CPUs stay reserved
    and the next trial's Ray Data read waits forever (seen: a live `rayflow tune --config demo` hung at
    its second trial). The dashboard binds to `runtime.dashboard_host` (127.0.0.1 by default); a
    cluster (RAY_ADDRESS / runtime.address) has its own."""
    from rayflow.runtime import embedded

    rt = cfg.runtime
    if rt.executor != "ray" or not cfg.tune.asha or rt.dashboard or not embedded(rt):
        return cfg
    log.info("[tune] starting the embedded Ray with its dashboard (on %s): Train's placement-group cleaner "
             "needs it to free the CPUs of trials that ASHA stops", rt.dashboard_host)
    return cfg.model_copy(update={"runtime": rt.model_copy(update={"dashboard": True})})


def tune(cfg: PipelineConfig, final: bool = True) -> dict:
    """The search; `final`: retrain the chosen and hand-set settings and test them (`distill --search`
    trains only the chosen one, itself)."""
    from rayflow.search import make_searcher
    from rayflow.search.space import knob_text
    from rayflow.stages.graph import Node
    from rayflow.stages.runner import Runner
    from rayflow.tuning.objective import objective_of

    t0 = time.perf_counter()
    cfg = with_cleaner_visible(cfg)
    t, space = cfg.tune, space_of(cfg)
    candidates = space.grid(*t.grid)
    val_cfg = with_params(cfg, {}, validation=True)
    runner = Runner(val_cfg)
    obj = objective_of(cfg, runner.splits.num_classes)
    log.info("[tune] building the validation-split teacher, GAN, ratio net and pool before the trials")
    runner.artifacts([Node.of("teacher"), Node.of("gan")] + ([Node.of("dre")] if cfg.dre.enabled else []))
    name = search_name(cfg, runner)
    candidates, left_out = _saved_candidates(runner, name, cfg, candidates)
    if not candidates:
        from rayflow.config import ConfigError

        raise ConfigError("tune: no (rho, M) candidate can be served by the pool within the draw budget (each "
                          "leaves a class or label stratum without fakes, or needs more than "
                          "tune.max_draws_per_class draws); raise tune.rho, tune.max_draws_per_class or "
                          "synth.pool_draws, or lower tune.m_per_class")
    prior = _saved_prior(runner, name, cfg, candidates) if t.searcher == "bound" else None
    searcher = make_searcher(t.searcher, space, seed=t.seed, candidates=candidates, prior=prior)
    steps, bs = cfg.student.train.steps, cfg.student.train.batch_size
    asha = {"max_t": steps * bs, "grace_period": max(1, steps * bs // t.evals), "reduction_factor": 2} \
        if t.asha else None
    cpus = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    total = float(cfg.runtime.num_cpus or os.cpu_count() or 1)
    log.info("[tune] %s searcher, %d trials over rho %s, M %s (%s executor)", t.searcher, t.trials, list(t.rho),
             list(t.m_per_class), runner.executor.name)
    # trials run in Tune's own working directory: a relative output_dir would point them at an empty
    # store there (every trial retraining teacher, GAN and pool), so they get the resolved location
    base = cfg.model_copy(update={"output_dir": runner.store.location}).model_dump(mode="json")
    trial = functools.partial(run_trial, base=base, metric=obj.metric)
    results = runner.executor.tune(
        trial, searcher=searcher, trials=t.trials, metric=obj.metric, mode=obj.mode, to_error=obj.to_error,
        storage=runner.ray_storage(), name=name, asha=asha, max_concurrent=max(1, int(total // max(cpus, 1e-9))),
        trial_cpus=TRIAL_CPUS)
    from rayflow.tuning.choice import attach_se

    n_val = len(runner.splits.val)
    attach_se(results, obj, n_val)  # each trial's SE over the validation images
    from rayflow.tracking import log_scalars, open_tracker

    # each trial's student wrote its own curves (tensorboard/cgankd-<key>/); the search's view: one
    # point per trial, its knobs and its final report, in trial order
    tracker = open_tracker(runner.tracking, name)
    for i, r in enumerate(results):
        if obj.metric in r:
            log.info("[tune] trial %d: %s -> %s ± %.3g", i, knob_text({d: r[d] for d in space.dims}),
                     obj.describe(r[obj.metric]), obj.shown(r["se"]))
        if obj.regression and obj.unit and obj.metric in r:
            r[f"{obj.metric}_{obj.unit}"] = obj.shown(r[obj.metric])  # in the labels' unit, as test_mae_<unit>
        log_scalars(tracker, r, i, prefix="trial/")
    tracker.close()
    note = None
    if prior is None:  # the searcher did not need the bound; search.html still plots it against each trial
        prior, note = _report_prior(runner, name, cfg, candidates)
    out = {"searcher": t.searcher, "trials": results, "space": space.to_dict(), "candidates": candidates,
           "bound": {json.dumps(list(k)): v for k, v in (prior or {}).items()}, "objective": obj.to_dict()}
    if note:
        out["bound_note"] = note
    if left_out:
        out["left_out"] = left_out
    # finished trials: those that return their committed student (ASHA-stopped ones return none); a
    # diverged student (NaN MAE) is no candidate
    done = [r for r in results if obj.metric in r and math.isfinite(r[obj.metric]) and r.get("artifact")]
    if done:  # finalists re-scored on more seeds, then the one-SE rule (choice.py)
        from rayflow.tuning.choice import decide, preferred, settings, student_scores
        from rayflow.tuning.final import final_test, hand_set

        s0 = cfg.seeds[0]
        out.update(decide(settings(done, obj, space.dims, s0), obj, preferred(hand_set(cfg, space.dims), prior, space),
                          space.dims, finalists=t.finalists, seeds=[s0 + 1 + i for i in range(t.rescore_seeds)],
                          score=student_scores(runner, cfg), n_val=n_val))
        if final:  # the FM baseline gets as many validation trials, then both are tested once
            from rayflow.tuning.fm_search import fm_search

            out["fm"] = fm_search(cfg, runner, obj, n_val)
            out["final"] = final_test(cfg, out["chosen"], obj, out["fm"].get("chosen"))
    out["wall_s"] = time.perf_counter() - t0
    runner.store.write_text(f"tune-{t.searcher}.json", json.dumps(out, indent=2, default=float))
    from rayflow.tuning.record import write_search_report

    write_search_report(runner.store)
    return out


def search_name(cfg: PipelineConfig, runner: Any) -> str:
    """The search's name (its Ray Tune experiment, its saved files): searcher, seed, the trials'
    student key, and a digest of the whole `tune` section. A search with other ranges, grid or draw
    budget is another search: restored under the old name, its searcher would go on proposing from
    the old candidates (seen: a resumed random search proposed a candidate the new budget leaves out)."""
    t = cfg.tune
    # the choice's settings act after the trials: the same trials, the same search (and name)
    sec = t.model_dump(mode="json", exclude=set(CHOICE_FIELDS) | set(FM_FIELDS))
    digest = hashlib.sha256(json.dumps(sec, sort_keys=True).encode()).hexdigest()[:8]
    return f"tune-{t.searcher}-{t.seed}-{runner.key_of(CGAN_KD.student(cfg.seeds[0]))}-{digest}"


def _saved_candidates(runner: Any, name: str, cfg: PipelineConfig, grid: list[dict]) -> tuple[list[dict], list[dict]]:
    """(candidates, left out), decided by `servable` when the search starts and kept beside it: a
    resumed search must propose from the same list, while its trials may have grown the pool since
    (which can make more candidates servable)."""
    saved = runner.store.read_text(f"{name}.candidates.json")
    if saved:
        d = json.loads(saved)
        return d["candidates"], d["left_out"]
    # leave out, cheaply and before any trial, what the pool cannot serve within the draw budget
    ok, out = servable(runner, cfg, grid)
    runner.store.write_text(f"{name}.candidates.json", json.dumps({"candidates": ok, "left_out": out}))
    return ok, out


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


def _report_prior(runner: Any, name: str, cfg: PipelineConfig, candidates: list[dict]) -> tuple[dict | None, str | None]:
    """The bound per candidate for the report's bound-vs-measured plot, or (None, why not): a
    search that ran must never fail on a figure (the bound needs held-out images, which a user's
    own data may not have)."""
    from rayflow.store_fs import one_line

    try:
        return _saved_prior(runner, name, cfg, candidates), None
    except Exception as e:  # noqa: BLE001 -- e.g. ConfigError: no held-out images
        log.warning("[tune] no bound for search.html's bound-vs-measured plot: %s", one_line(e))
        return None, f"no bound: {one_line(e)}"

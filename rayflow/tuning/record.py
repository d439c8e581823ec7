"""`rayflow grid`: record every point of the (rho, M) candidate grid on validation data (each with
every configured seed, all students in one executor run), then replay the searchers against the
recording: trials each needs to reach the grid's best, and how well the bound ranks the points.
The recorded error is 1 − validation accuracy, or the validation MAE (normalised labels) for a
continuous label (`objective.py`); the table shows the MAE in the labels' unit."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from rayflow.ablation import CGAN_KD
from rayflow.config import PipelineConfig
from rayflow.tuning.pools import bound_prior, servable
from rayflow.tuning.search import KNOBS, space_of, with_params

log = logging.getLogger("rayflow")


def record_grid(cfg: PipelineConfig, n_replays: int = 20) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from rayflow.search import compare, pooled_std
    from rayflow.stages.graph import Node
    from rayflow.stages.runner import Runner
    from rayflow.tuning.objective import objective_of

    t0 = time.perf_counter()
    space = space_of(cfg)
    candidates = space.grid(*cfg.tune.grid)
    base = Runner(with_params(cfg, {}, validation=True))
    obj = objective_of(cfg, base.splits.num_classes)
    from rayflow.synth.manifest import SynthError

    # leave out, cheaply, what the pool cannot serve within the draw budget (tune.max_draws_per_class)
    candidates, skipped = servable(base, cfg, candidates)
    feasible = []
    for c in candidates:  # a view the pool's cap cannot serve is left out of the grid, and said so
        try:
            base.with_config(with_params(cfg, c, validation=True)).artifact(CGAN_KD.fake_set())
            feasible.append(c)
        except SynthError as e:
            log.warning("[grid] rho %.2f M %d left out: %s", c["rho"], c["m"], e)
    skipped += [c for c in candidates if c not in feasible]
    candidates = feasible
    pairs = [(base.with_config(with_params(cfg, c, validation=True)), CGAN_KD.student(s))
             for c in candidates for s in cfg.seeds]
    log.info("[grid] %d points x %d seeds = %d students on validation data", len(candidates), len(cfg.seeds),
             len(pairs))
    arts = base.batch(pairs)
    recorded: dict[tuple, list[float]] = {}
    for (r, _), a in zip(pairs, arts):
        params = {k: getattr_path(r.cfg, KNOBS[k]) for k in space.dims}
        recorded.setdefault(space.key(params), []).append(obj.to_error(a.metrics[obj.metric]))
    nokd = base.artifacts([Node.of("nokd", seed=s) for s in cfg.seeds])
    prior = bound_prior(base, cfg, candidates)
    keys = list(recorded)
    measured = np.array([np.mean(recorded[k]) for k in keys])
    rho_s = float(spearmanr([prior[k] for k in keys], measured).statistic)
    table, runs = compare(recorded, prior, space, n_seeds=n_replays)
    spread = float(measured.max() - measured.min())
    out = {"left_out": skipped, "recorded": [{**space.from_key(k), "val_error": recorded[k], "bound": prior[k]} for k in keys],
           "seed_noise": pooled_std(recorded), "spread": spread, "spearman_bound_vs_measured": rho_s,
           "nokd_val_error": [obj.to_error(a.metrics[obj.metric]) for a in nokd],
           "replay": table, "curves": {name: [r["curve"] for r in rs] for name, rs in runs.items()},
           "objective": obj.to_dict(), "wall_s": time.perf_counter() - t0}
    base.store.write_text("grid.json", json.dumps(out, indent=2, default=float))
    write_search_report(base.store)
    return out


def getattr_path(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def format_grid(out: dict[str, Any]) -> str:
    o = out.get("objective") or {}
    if o.get("mode") == "min":  # a continuous label: the MAE in the labels' unit
        k, name = float(o["error_scale"]), f"val {o['error_label']}"
    else:  # classification: 1 - accuracy, as a fraction
        k, name = 1.0, "val error"
    extra = [d for d in ("real_fraction", "kd_weight", "mix_alpha", "select_share", "latent_scale")
             if out["recorded"] and d in out["recorded"][0]]
    lines = [f"{'rho':>6} {'M/class':>8} " + "".join(f"{d:>14} " for d in extra) + f"{name + ' (seeds)':>24} {'bound':>7}"]
    for r in out["recorded"]:
        lines.append(f"{r['rho']:>6.2f} {r['m']:>8d} " + "".join(f"{r[d]:>14.2f} " for d in extra)
                     + f"{' '.join(f'{k * e:.4f}' for e in r['val_error']):>24} {r['bound']:>7.3f}")
    noise = (f" = {out['spread'] / out['seed_noise']:.1f}x the seed noise {k * out['seed_noise']:.4f}"
             if out["seed_noise"] > 0 else " (seed noise unknown: one student seed per point)")
    lines.append(f"spread best-worst {k * out['spread']:.4f}{noise}; Spearman(bound, measured) "
                 f"{out['spearman_bound_vs_measured']:.2f}; NOKD {name} {[k * e for e in out['nokd_val_error']]}")
    lines.append(f"{'searcher':>8} {'mean trials to best':>20} {'median':>7} {'share of grid':>14} {'reached':>8}")
    for r in out["replay"]:
        lines.append(f"{r['searcher']:>8} {r['mean_trials']:>20.1f} {r['median_trials']:>7.1f} "
                     f"{r['fraction_of_grid']:>14.2f} {r['reached']:>8.2f}")
    return "\n".join(lines)


def search_results(store: Any) -> tuple[dict | None, list[dict]]:
    """The recorded grid (grid.json) and the tune-<searcher>.json runs found in the store."""
    grid = store.read_text("grid.json")
    tunes = [json.loads(t) for t in (store.read_text(f"tune-{s}.json") for s in ("grid", "random", "tpe", "bound"))
             if t]
    return (json.loads(grid) if grid else None), tunes


def write_search_report(store: Any) -> str:
    """search.html from the grid.json and tune-<searcher>.json found in the store."""
    from rayflow.report.figures import page
    from rayflow.report.search_html import render_search

    return store.write_text("search.html", page("rayflow search", render_search(*search_results(store))))

"""What a search decides from its pools before any trial: which candidates the pool can serve
(`servable`) and the bound of each (`bound_prior`). Split from search.py.

A candidate with a searched latent scale (`tune.latent_scale`) reads the pool drawn at that scale:
the validation config with `synth.latent_scale` set, so the very pool (same key) its trial's stage
graph reads and `rayflow run --set synth.latent_scale=...` builds. Each such pool is built here, in
the driver, once per scale, before the first trial."""

from __future__ import annotations

import logging
import math
from typing import Any

from rayflow.config import PipelineConfig

log = logging.getLogger("rayflow")

POOL_KNOBS = ("latent_scale",)  # search dimensions that change which pool a candidate reads


def pool_groups(runner: Any, cfg: PipelineConfig, candidates: list[dict]) -> list[tuple[Any, list[int]]]:
    """(a runner whose pool the candidates read, their indices), one per distinct pool, in order;
    `runner`: the search's validation runner (the group without a pool knob gets it as it is)."""
    from rayflow.tuning.search import with_params

    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault(tuple((k, c[k]) for k in POOL_KNOBS if k in c), []).append(i)
    return [(runner.with_config(with_params(cfg, dict(key), validation=True)) if key else runner, idx)
            for key, idx in groups.items()]


def bound_prior(runner: Any, cfg: PipelineConfig, candidates: list[dict]) -> dict[tuple, float]:
    """The bound's total per candidate, from the pool it reads (the validation-mode run's; no
    student trained), at the candidate's real share per batch (the fakes' weight in the bound)."""
    from rayflow.bound import bound_terms
    from rayflow.tuning.scores import bound_inputs
    from rayflow.tuning.search import space_of

    space, out = space_of(cfg), {}
    for r, idx in pool_groups(runner, cfg, candidates):
        b = bound_inputs(r)
        for c in (candidates[i] for i in idx):
            out[space.key(c)] = float(bound_terms(b.fake, b.real, b.burnin, c["rho"], c["m"], b.n_real, b.space,
                                                  real_fraction=c.get("real_fraction", cfg.fake.real_fraction))["total"])
    return out


def servable(runner: Any, cfg: PipelineConfig, candidates: list[dict]) -> tuple[list[dict], list[dict]]:
    """(kept, left out) candidates, decided before any trial from the pool as it stands.

    A view that needs more draws than the pool holds extends it, segment after segment, inside the
    trial: a small rho at a large M took one live demo trial to 64,000 draws per class (7 minutes)
    before its student started, and a global cutoff of a continuous label can leave a stratum with no
    eligible draw at all, so its view extends up to `synth.max_draws_per_class` and then fails. Over
    the pool's committed segments, a candidate is left out when its emptiest class (stratum) has no
    eligible draw at its rho (after cDR-RS and the cutoff, as the view selects them), or when
    M x (draws / eligible) there exceeds the budget `tune.max_draws_per_class` (default: the pool's
    cap). Eligible counts are taken at their Poisson lower bound k - 2 sqrt(k), but at least k / 4 (a
    small pool's handful of eligible draws would otherwise rule out every candidate): estimated from a
    rare class's few eligible first draws, a point estimate passed a 63,000-draw budget on the demo,
    and that view then needed 127,000 draws per class."""
    keep = set()
    for r, idx in pool_groups(runner, cfg, candidates):
        ok = _servable_by(r, cfg, [candidates[i] for i in idx])
        keep |= {i for i, k in zip(idx, ok) if k}
    return ([c for i, c in enumerate(candidates) if i in keep],
            [c for i, c in enumerate(candidates) if i not in keep])


def _servable_by(runner: Any, cfg: PipelineConfig, candidates: list[dict]) -> list[bool]:
    """`servable`'s decision per candidate, all reading the pool of `runner`."""
    from rayflow.stages.synth import SHARDS, pool_node
    from rayflow.synth.manifest import Manifest
    from rayflow.synth.view import View, eligible_per_class, pool_index

    sub = cfg.dre.enabled
    segments = [runner.artifact(pool_node(sub))]
    while (nxt := runner.store.lookup("pool", runner.key_of(pool_node(sub, len(segments))))) is not None:
        segments.append(nxt)
    man = Manifest.load(segments[0].file(SHARDS))
    index = pool_index([s.file(SHARDS) for s in segments])
    draws = len(index["sample_id"]) / man.space.num_strata
    least = {rho: min(eligible_per_class(index, man.burnin, View(sub, rho, False, 1), man.space))
             for rho in sorted({float(c["rho"]) for c in candidates})}
    cap = min(cfg.tune.max_draws_per_class or cfg.synth.max_draws_per_class, cfg.synth.max_draws_per_class)
    unit = "label stratum" if man.space.continuous else "class"
    ok = []
    for c in candidates:
        k = least[float(c["rho"])]
        k_lo = max(k - 2.0 * math.sqrt(k), k / 4.0)  # floor: see the docstring
        ok.append(bool(k_lo > 0 and c["m"] * draws / k_lo <= cap))
        if not ok[-1]:
            scale = f" latent scale {c['latent_scale']:g}" if "latent_scale" in c else ""
            log.warning("[tune] rho %.2f M %d%s left out: its emptiest %s keeps %d of the pool's %d draws per %s "
                        "(a view would need about %s draws per %s; budget %d)", c["rho"], c["m"], scale, unit, k,
                        draws, unit, f"{c['m'] * draws / k_lo:.0f}" if k_lo > 0 else "unboundedly many", unit, cap)
    return ok

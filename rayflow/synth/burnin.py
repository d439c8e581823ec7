"""Burn-in (the frozen max density ratio and filter cutoffs per class) and round planning.

Rejection makes the kept count random, so the stage runs in rounds: each plans, per class, enough
draws for the remaining deficit from the acceptance rate so far, with the burn-in as prior.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rayflow.config import SynthConfig
from rayflow.synth.inputs import (
    _BURNIN_KEY,
    _DRE_BURNIN_STREAM,
    _FILTER_BURNIN_STREAM,
    _PRIOR_DRAWS,
    _SHARD_STREAM,
    BurninStats,
    SynthInputs,
)
from rayflow.synth.manifest import ShardSpec, SynthError
from rayflow.synth.udfs import Generate, Label, Score, derive_seed


def score_kwargs(inputs: SynthInputs, cfg: SynthConfig) -> dict[str, Any]:
    return dict(feature_dir=inputs.feature_dir, ratio_state=inputs.ratio_state, num_classes=inputs.space,
                ratio_hidden=tuple(inputs.ratio_hidden), ratio_dropout=inputs.ratio_dropout, seed=cfg.seed,
                batch_size=cfg.batch_size)


def compute_burnin(inputs: SynthInputs, cfg: SynthConfig, *, device: str = "cpu") -> BurninStats:
    """Burn-in statistics in plain torch, as the official ``make_fake_datasets`` does.

    Per stratum (class): ``max_ratio`` = max density ratio of ``dre_burnin`` draws (and the mean
    acceptance probability under it); then ``filter_burnin`` draws that passed the rejection sampler
    (with that max frozen) give the cutoff = ``np.quantile(error, rho)``, per class, or over all
    strata for a continuous label (the label space decides).
    """
    inputs.validate(cfg)
    C, bs, space = inputs.num_strata, cfg.batch_size, inputs.space
    gen = Generate(inputs.generator, inputs.generator_state, batch_size=bs, device=device, space=space,
                   **cfg.latent_kwargs())  # the cutoffs of the pool's own draws
    stats = BurninStats()
    score = None
    if inputs.subsample:
        score = Score(**score_kwargs(inputs, cfg), device=device)
        stats.max_ratio, stats.subsample_rate = [], []
        for c in range(C):
            y, x = gen.draw_labelled(c, inputs.dre_burnin, derive_seed(cfg.seed, _DRE_BURNIN_STREAM, c))
            r = score.ratios(x, y)
            top = float(r.max())
            if not top > 0:
                raise SynthError(f"density-ratio burn-in: all {len(r)} ratios of stratum {c} are 0 (degenerate ratio net)")
            stats.max_ratio.append(top)
            stats.subsample_rate.append(float(np.minimum(r / top, 1.0).mean()))
        score.set_max_ratio(stats.max_ratio)
    if inputs.pool or inputs.filter:
        label = Label(inputs.teacher_dir, num_classes=space, batch_size=bs, device=device)
        need = inputs.filter_burnin
        samples = [_filter_burnin_draws(inputs, cfg, gen, score, label, stats, c) for c in range(C)]
    if inputs.pool:  # the sample itself: a view fixes the cutoff of any rho from it
        stats.filter_ce = [ce.astype(float).tolist() for ce, _ in samples]
        stats.filter_accepted = [acc.tolist() for _, acc in samples]
        stats.filter_need = need
    if inputs.filter:
        ces = [ce[acc][:need] for ce, acc in samples]
        cutoffs = space.cutoffs(ces, inputs.rho)
        stats.cutoffs = [float(v) for v in cutoffs]
        stats.filter_rate = [float((ce <= cut).mean()) for ce, cut in zip(ces, cutoffs)]
    return stats


def _filter_burnin_draws(inputs: SynthInputs, cfg: SynthConfig, gen: Generate, score: Score | None, label: Label,
                         stats: BurninStats, c: int) -> tuple[np.ndarray, np.ndarray]:
    """(teacher CE, cDR-RS outcome) of class `c`'s filter burn-in draws, until `filter_burnin` of them
    are accepted. A pool (`inputs.pool`) also scores the rejected draws, apart from the accepted ones,
    so the accepted draws' CEs come from the very batches a filtering run scores them in; otherwise
    rejected draws keep CE NaN."""
    need = inputs.filter_burnin
    rate = stats.subsample_rate[c] if score is not None else 1.0
    ce_c, acc_c, have, drawn = [], [], 0, 0
    for k in range(50):
        if have >= need:
            break
        n = math.ceil((need - have) / max(rate, 1e-3) * 1.2) + 8
        y, x = gen.draw_labelled(c, n, derive_seed(cfg.seed, _FILTER_BURNIN_STREAM, c, k))
        acc = score.accept(x, y, key=(_BURNIN_KEY, c, k))[1] if score is not None else np.ones(n, bool)
        ce = np.full(n, np.nan, np.float32)
        for part in (acc, ~acc) if inputs.pool else (acc,):
            if part.any():
                t = torch.from_numpy(part)
                ce[part] = label.errors(label.logits(x[t]), y[t].numpy())
        ce_c.append(ce)
        acc_c.append(acc)
        have, drawn = have + int(acc.sum()), drawn + n
    if have < need:
        raise SynthError(f"filter burn-in: class {c} got only {have} of {need} subsampled samples "
                         f"from {drawn} draws (acceptance too low)")
    return np.concatenate(ce_c), np.concatenate(acc_c).astype(bool)


def plan_draws(draws_per_class: int, num_classes: int, shard_size: int, first_id: int, seed: int) -> list[ShardSpec]:
    """A pool segment's shards: exactly `draws_per_class` draws of every class, in near-equal shards
    of at most `shard_size`, classes interleaved by shard id."""
    k = math.ceil(draws_per_class / shard_size)
    sizes = [draws_per_class // k + (i < draws_per_class % k) for i in range(k)]
    specs, sid = [], first_id
    for size in sizes:
        for c in range(num_classes):
            specs.append(ShardSpec(sid, c, size, derive_seed(seed, _SHARD_STREAM, sid)))
            sid += 1
    return specs


def plan_round(kept: np.ndarray, drawn: np.ndarray, prior_rate: np.ndarray, m_per_class: int, shard_size: int,
               first_id: int, seed: int) -> list[ShardSpec]:
    """Shards for the remaining deficit ``m_per_class - kept`` of every class.

    Draws per class ``n = ceil((d + 3 sqrt(d) + 3) / rate)`` with ``rate`` the kept fraction so far,
    shrunk towards the burn-in prior (worth ``_PRIOR_DRAWS`` draws), so one round usually suffices;
    split into near-equal shards of at most ``shard_size``, classes interleaved by shard id.
    """
    per_class: list[list[int]] = []
    for c in range(len(kept)):
        d = int(m_per_class - kept[c])
        if d <= 0:
            per_class.append([])
            continue
        rate = max((kept[c] + _PRIOR_DRAWS * prior_rate[c]) / (drawn[c] + _PRIOR_DRAWS), 1e-3)
        n = math.ceil((d + 3 * math.sqrt(d) + 3) / rate)
        k = math.ceil(n / shard_size)
        per_class.append([n // k + (i < n % k) for i in range(k)])
    specs, sid = [], first_id
    for i in range(max(map(len, per_class), default=0)):
        for c, sizes in enumerate(per_class):
            if i < len(sizes):
                specs.append(ShardSpec(sid, c, sizes[i], derive_seed(seed, _SHARD_STREAM, sid)))
                sid += 1
    return specs

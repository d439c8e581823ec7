"""Driver of the synthetic-data stage: burn-in, then rounds of shards mapped over the executor.

Work unit: a *shard* = ``n_draws`` generator draws of **one** class from one seed
(``derive_seed(cfg.seed, 0, shard_id)``); it flows ``Generate -> Score -> Label -> write_shards``
and lands in its own Parquet file. Because acceptance is random, the run goes in *rounds*: each
round plans, per class, enough draws for the remaining deficit (from the acceptance rate so far,
with the burn-in as prior, plus a 3-sigma margin), until every class has ``m_per_class`` kept
samples; readers then truncate every class to exactly ``m_per_class`` by ``(shard_id, row)``.

Every decision depends only on ``(weights, flags, SynthConfig)``: shard seeds and rejection keys
are derived from shard ids, the max ratio is frozen after the burn-in, round plans depend only
on the counts of finished rounds. So the ``ray`` and ``local`` executors write identical shards,
and a killed run resumes from its manifest (finished shards are skipped, unfinished ones rerun
from scratch) to the same result as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rayflow.config import SynthConfig
from rayflow.executors import Executor, LocalExecutor, PoolSpec, StepSpec
from rayflow.gan.loop import generate
from rayflow.memory import release_freed_memory
from rayflow.models.io import ARCH, WEIGHTS
from rayflow.progress import Progress
from rayflow.synth.burnin import compute_burnin, plan_draws, plan_round, score_kwargs
from rayflow.synth.inputs import BurninStats, SynthInputs
from rayflow.synth.io import write_bytes_atomic, write_shards
from rayflow.synth.manifest import MANIFEST, SHARD_DIR, Manifest, SynthError
from rayflow.synth.udfs import Generate, Label, Score, build_generator, ratio_weights

__all__ = ["SynthOptions", "run_synth"]


@dataclass
class SynthOptions:
    """Executor knobs that do not change the content (so they are not part of the fingerprint)."""

    cpus_per_actor: float = 0.5  # fractional: 3 pools of 0.5 CPU leave room on 2 CPUs (no deadlock)
    threads_per_actor: int | None = None  # torch threads per actor; default max(1, int(cpus_per_actor))
    local_threads: int | None = None  # torch threads of the in-process work (None: leave as is)
    gen_actors: int = 2  # max actors per pool (fused: shards processed at once)
    fused: bool = True  # one actor runs generate -> score -> label -> write (see docs/design.md)
    ship_shards: bool = False  # actors return each shard's bytes and this process writes them (out_dir
    # is on this machine only, e.g. under the temp dir for an object store); else actors write out_dir
    max_rounds: int = 20
    progress: bool = True
    progress_every_s: float = 10.0  # a round's progress line (rate, ETA) every this many seconds; a
    # shorter round prints only its summary line


def _hash_state(h: Any, state: dict[str, torch.Tensor]) -> None:
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _fingerprint(inputs: SynthInputs, cfg: SynthConfig, G: nn.Module) -> str:
    h = hashlib.sha256()
    desc = {"m_per_class": cfg.m_per_class, "batch_size": cfg.batch_size, "shard_size": cfg.shard_size,
            "seed": cfg.seed, "num_classes": inputs.num_strata, "subsample": inputs.subsample,
            "filter": inputs.filter, "rho": inputs.rho, "relabel": inputs.relabel, "soft_labels": inputs.soft(cfg),
            "dre_burnin": inputs.dre_burnin, "filter_burnin": inputs.filter_burnin, "pool": inputs.pool,
            "first_shard_id": inputs.first_shard_id,
            "ratio_hidden": list(inputs.ratio_hidden), "ratio_dropout": inputs.ratio_dropout,
            "burnin": inputs.burnin.to_dict() if inputs.burnin else None,
            **({"label_space": inputs.space.to_dict()} if inputs.space.continuous else {}),
            **cfg.latent_kwargs()}  # only when not the default: a work dir from before resumes
    h.update(json.dumps(desc, sort_keys=True).encode())
    _hash_state(h, G.state_dict())
    if inputs.subsample:
        _hash_state(h, ratio_weights(inputs.ratio_state))
    for d, used in ((inputs.feature_dir, inputs.subsample), (inputs.teacher_dir, inputs.uses_teacher(cfg))):
        if used:
            for name in (ARCH, WEIGHTS):
                h.update((Path(d) / name).read_bytes())
    return h.hexdigest()


def _step_kwargs(inputs: SynthInputs, cfg: SynthConfig, burnin: BurninStats, out_dir: Path,
                 image_shape: tuple[int, ...], header: dict) -> dict[str, dict | None]:
    """Constructor kwargs of the steps (None: step skipped), shared by both executors."""
    kw: dict[str, dict | None] = {
        "generate": dict(generator=inputs.generator, generator_state=inputs.generator_state,
                         batch_size=cfg.batch_size, space=inputs.space if inputs.space.continuous else None,
                         **cfg.latent_kwargs()),
        "score": dict(score_kwargs(inputs, cfg), max_ratio=burnin.max_ratio) if inputs.subsample else None,
        "label": dict(teacher_dir=inputs.teacher_dir, num_classes=inputs.space,  # a path, or NodePath
                      cutoffs=burnin.cutoffs if inputs.filter else None, relabel=inputs.relabel,
                      all_draws=inputs.pool, batch_size=cfg.batch_size) if inputs.uses_teacher(cfg) else None,
        "write": dict(out_dir=str(out_dir), image_shape=tuple(image_shape), num_classes=inputs.space,
                      meta=header),
    }
    return kw


def _record(summary: dict[str, Any]) -> dict[str, Any]:
    """One manifest record from a ``write_shards`` summary row (numpy scalars -> JSON types)."""
    return {"shard_id": int(summary["shard_id"]), "label": int(summary["label"]), "file": str(summary["file"]),
            "n_draws": int(summary["n_draws"]), "n_accepted": int(summary["n_accepted"]),
            "n_kept": int(summary["n_kept"]), "label_counts": [int(v) for v in summary["label_counts"]]}


def _landed(row: dict[str, Any], out: Path) -> dict[str, Any]:
    """The manifest record of a finished shard, after writing its file if an actor shipped the bytes (a
    record always names a complete file)."""
    if row.get("data") is not None:
        write_bytes_atomic(row["data"], out / str(row["file"]))
    return _record(row)


class _StepsThenWrite:
    """Last actor of the Ray pipeline: its step(s) in order, then :func:`write_shards` on the output.

    Writing inside the last pool instead of a separate task operator saves a worker process per
    round; on a busy 2-core machine each extra process costs seconds of start-up. With
    ``synth.fused`` this one actor runs every step (generate -> score -> label -> write).
    """

    def __init__(self, steps: list[tuple[type, dict]], write_kwargs: dict):
        self.steps = [cls(**kwargs) for cls, kwargs in steps]
        self.write_kwargs = write_kwargs

    def __call__(self, batch: dict) -> dict:
        for step in self.steps:
            batch = step(batch)
        out = write_shards(batch, **self.write_kwargs)
        del batch
        release_freed_memory()  # flat RSS over many shards (rayflow/memory.py)
        return out


def _chain(kw: dict[str, dict | None], fused: bool) -> Callable[[str, int | None], list[StepSpec]]:
    """The executor's step chain: Generate -> Score -> Label -> write, fused into one actor (default)
    or one pool per step with the write inside the last (for clusters where steps want other resources)."""

    def steps(device: str, threads: int | None) -> list[StepSpec]:
        extra = {"device": device} if threads is None else {"device": device, "threads": threads}
        chain = [(cls, dict(kw[name], **extra)) for cls, name in ((Generate, "generate"), (Score, "score"),
                                                                   (Label, "label")) if kw[name] is not None]
        if fused:
            return [StepSpec(_StepsThenWrite, {"steps": chain, "write_kwargs": kw["write"]})]
        return [StepSpec(cls, k) for cls, k in chain[:-1]] + [
            StepSpec(_StepsThenWrite, {"steps": chain[-1:], "write_kwargs": kw["write"]})]

    return steps


def _sweep_tmp(out_dir: Path) -> None:
    """Remove temp files a killed run left behind (shards and manifest are renamed into place)."""
    for p in [*(out_dir / SHARD_DIR).glob(".*.tmp"), *out_dir.glob(f".{MANIFEST}.*.tmp")]:
        p.unlink(missing_ok=True)


def _kept_text(kept: np.ndarray, m: int, verb: str = "kept") -> str:
    """`kept 2000 samples (200 per class; target 200)`: shards overshoot the target (readers take the
    first m of each class), and a list of per-class counts `of m` read like a failure."""
    lo, hi = int(kept.min()), int(kept.max())
    per = f"{lo} per class" if lo == hi else f"{lo}-{hi} per class"
    short = int((kept < m).sum())
    need = f"{short} of {len(kept)} classes short of {m}" if short else f"target {m}"
    return f"{verb} {int(kept.sum())} samples ({per}; {need})"


def _image_shape(G: nn.Module, space) -> tuple[int, int, int]:
    return tuple(int(v) for v in generate(G, space.grid(1)[:1], seed=0).shape[1:])


def driver_device(cfg: SynthConfig) -> str:
    """Where the driver's own synth work (burn-in, top-up rounds) runs: on the GPU when the actors
    get GPUs and this machine has one (a CPU-only driver of a GPU cluster stays on the CPU)."""
    return "cuda" if cfg.num_gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"


def pool_spec(cfg: SynthConfig, opts: SynthOptions) -> PoolSpec:
    """The actors' resources: `synth.num_gpus_per_actor` GPUs each, which also makes the executor
    build their nets on "cuda" (Ray) or on the GPU when there is one (local)."""
    return PoolSpec(max_actors=opts.gen_actors, cpus_per_actor=opts.cpus_per_actor,
                    gpus_per_actor=cfg.num_gpus_per_actor, threads_per_actor=opts.threads_per_actor)


def run_synth(inputs: SynthInputs, cfg: SynthConfig, out_dir: str | Path,
              executor: Executor | None = None, *, options: SynthOptions | None = None,
              on_shard: Callable[[dict], None] | None = None,
              on_round: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Generate -> subsample -> teacher-label -> filter -> Parquet shards in ``out_dir``, resumably.

    Returns metrics: per-class counts (drawn, accepted by the rejection sampler, kept by the
    filter), acceptance rates (``subsample_accept_per_class``, ``filter_keep_per_class``),
    ``samples_per_s`` (kept samples produced by this call / wall), ``draws_per_s``, ``wall_s``,
    ``burnin_s``, rounds and shards (``shards_in_driver``: those of small top-up rounds, which the
    ``ray`` executor runs in this process). ``on_shard(record)`` is called after every finished shard
    has been recorded in the manifest (progress hooks, tests); ``on_round(round, counts)`` after every
    round (its shards, seconds, cumulative draws and kept samples, rates: the metrics trackers).
    """
    executor = executor or LocalExecutor()
    opts = options or SynthOptions()
    t_start = time.perf_counter()
    inputs.validate(cfg)
    C, m = inputs.num_strata, cfg.m_per_class
    out = Path(out_dir)
    G = build_generator(inputs.generator, inputs.generator_state)
    image_shape = _image_shape(G, inputs.space)
    header = {"num_classes": C, "image_shape": list(image_shape), "m_per_class": m, "seed": cfg.seed,
              "subsample": inputs.subsample, "filter": inputs.filter, "rho": inputs.rho,
              "relabel": inputs.relabel, "soft_labels": inputs.soft(cfg), "pool": inputs.pool,
              **({"label_space": inputs.space.to_dict()} if inputs.space.continuous else {}),
            **cfg.latent_kwargs()}  # only when not the default: a work dir from before resumes
    man = Manifest.open(out, _fingerprint(inputs, cfg, G), header)
    del G
    out.mkdir(parents=True, exist_ok=True)
    _sweep_tmp(out)
    local_device = driver_device(cfg)
    prev_threads = torch.get_num_threads()
    if opts.local_threads:
        torch.set_num_threads(opts.local_threads)
    try:
        t0 = time.perf_counter()
        if man.burnin is None:
            man.burnin = (inputs.burnin or compute_burnin(inputs, cfg, device=local_device)).to_dict()
            man.save()
        burnin = BurninStats.from_dict(man.burnin)
        release_freed_memory()  # the burn-in's nets and batches are gone; keep the driver small
        burnin_s = time.perf_counter() - t0
        kw = _step_kwargs(inputs, cfg, burnin, out, image_shape, header)
        if opts.ship_shards:
            kw["write"]["out_dir"] = None
        steps = _chain(kw, opts.fused)
        pool = pool_spec(cfg, opts)
        t_main = time.perf_counter()
        skipped = len(man.records)
        done = draws = kept_now = in_driver = 0
        counted = "n_draws" if inputs.pool else "n_kept"  # what a class needs m of
        while True:
            pending = man.pending()
            if not pending:
                kept = man.per_class(counted)
                if (kept >= m).all():
                    break
                if man.num_rounds >= opts.max_rounds:
                    rate = kept / np.maximum(man.per_class("n_draws"), 1)
                    short = np.flatnonzero(kept < m).tolist()
                    raise SynthError(f"after {man.num_rounds} rounds class(es) {short} still lack samples "
                                     f"(kept {kept[short].tolist()} of {m}; kept/draw {np.round(rate[short], 4).tolist()})")
                if inputs.pool:  # a pool segment: exactly m draws per class, one round
                    pending = plan_draws(m, C, cfg.shard_size, inputs.first_shard_id, cfg.seed)
                else:
                    pending = plan_round(kept, man.per_class("n_draws"), burnin.expected_rate(C), m,
                                         cfg.shard_size, man.next_shard_id(), cfg.seed)
                man.add_round(pending)
                man.save()
            # a top-up round of at most one shard's draws runs in this process: starting a Ray Data
            # pipeline and its actors costs more than the draws (8 s vs 0.1 s for a 1-shard round at
            # M = 100k on 2 cores); both executors write identical shards, so the result is the same
            small = executor.name != "local" and sum(s.n_draws for s in pending) <= cfg.shard_size \
                and man.num_rounds > 1
            run = LocalExecutor() if small else executor
            t_round = time.perf_counter()
            # lines while a long round runs (the summary below ends every round, so not after the last
            # shard), timed from the first finished shard: the actors' start-up (20 s on a busy 2-core
            # box) would put the whole round's ETA at minutes
            prog = None
            rows = run.map_batches([s.item() for s in pending], steps, pool)
            for i, rec in enumerate((_landed(row, out) for row in rows), 1):
                man.mark_done(rec)
                man.save()
                done, draws, kept_now = done + 1, draws + rec["n_draws"], kept_now + rec["n_kept"]
                in_driver += small
                if on_shard is not None:
                    on_shard(rec)
                if prog is None:
                    prog = Progress(f"synth round {man.num_rounds}", len(pending), "shards", start=i,
                                    every_s=opts.progress_every_s, min_gap_s=opts.progress_every_s,
                                    enabled=opts.progress)
                elif i < len(pending):
                    prog.update(i, kept=int(man.per_class(counted).sum()))
            lost = [s.shard_id for s in man.pending()]
            if lost:  # never loop on shards the executor did not report
                raise SynthError(f"shard(s) {lost[:10]} of round {man.num_rounds} ended without a summary")
            now = time.perf_counter()
            if on_round is not None:
                on_round(man.num_rounds, {
                    "round_shards": len(pending), "round_s": now - t_round, "in_driver": int(small),
                    "kept": int(man.per_class(counted).sum()), "drawn": int(man.per_class("n_draws").sum()),
                    "samples_per_s": kept_now / max(now - t_main, 1e-9),
                    "draws_per_s": draws / max(now - t_main, 1e-9)})
            if opts.progress:
                print(f"[synth] round {man.num_rounds} finished: {len(pending)} shards in {now - t_round:.1f} s, "
                      f"{_kept_text(man.per_class(counted), m, 'drew' if inputs.pool else 'kept')}, "
                      f"{kept_now / max(now - t_main, 1e-9):.0f} samples/s, {draws / max(now - t_main, 1e-9):.0f} "
                      f"draws/s ({'top-up in the driver' if small else executor.name})", flush=True)
    finally:
        torch.set_num_threads(prev_threads)
    wall = time.perf_counter() - t_start
    drawn, accepted, kept = (man.per_class(f) for f in ("n_draws", "n_accepted", "n_kept"))
    return {
        "executor": executor.name, "num_classes": C, "m_per_class": m, "samples": m * C,
        "image_shape": list(image_shape),
        "drawn_per_class": drawn.tolist(), "accepted_per_class": accepted.tolist(), "kept_per_class": kept.tolist(),
        "subsample_accept_per_class": (accepted / np.maximum(drawn, 1)).tolist(),
        "filter_keep_per_class": (kept / np.maximum(accepted, 1)).tolist(),
        "subsample_accept": float(accepted.sum() / max(drawn.sum(), 1)),
        "filter_keep": float(kept.sum() / max(accepted.sum(), 1)),
        "burnin": burnin.to_dict(), "rounds": man.num_rounds, "shards": len(man.records),
        "shards_run": done, "shards_skipped": skipped, "shards_in_driver": in_driver,
        "samples_per_s": kept_now / wall, "draws_per_s": draws / max(time.perf_counter() - t_main, 1e-9),
        "wall_s": wall, "burnin_s": burnin_s,
    }

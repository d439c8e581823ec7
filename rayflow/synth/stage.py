"""Driver of the synthetic-data stage: burn-in, rounds of shards, Ray Data or local executor.

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
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rayflow.config import RuntimeConfig, SynthConfig
from rayflow.filtering import check_rho, class_cutoffs, teacher_ce
from rayflow.gan.loop import generate
from rayflow.memory import release_freed_memory
from rayflow.stages.models_io import ARCH, WEIGHTS
from rayflow.synth.io import write_shards
from rayflow.synth.manifest import MANIFEST, SHARD_DIR, Manifest, ShardSpec, SynthError
from rayflow.synth.udfs import Generate, GeneratorSpec, Label, Score, build_generator, derive_seed, ratio_weights

__all__ = ["SynthInputs", "SynthOptions", "BurninStats", "GeneratorSpec", "compute_burnin", "plan_round",
           "run_synth"]

# seed streams: derive_seed(cfg.seed, STREAM, ...)
_SHARD_STREAM, _DRE_BURNIN_STREAM, _FILTER_BURNIN_STREAM = 0, 1, 2
_BURNIN_KEY = 2**32  # rng_key prefix of the filter burn-in's rejection draws (shard ids stay below)
_PRIOR_DRAWS = 200  # weight of the burn-in acceptance estimate, in draws, when planning rounds


@dataclass
class BurninStats:
    """Per-class results of the burn-in (lists of length num_classes; ``None`` where disabled)."""

    max_ratio: list[float] | None = None  # M̄_y: max density ratio over dre_burnin draws
    subsample_rate: list[float] | None = None  # mean min(r / M̄_y, 1) on those draws
    cutoffs: list[float] | None = None  # teacher-CE rho-quantile over filter_burnin subsampled draws
    filter_rate: list[float] | None = None  # fraction of the filter burn-in with CE <= cutoff

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BurninStats:
        return cls(**d)

    def expected_rate(self, num_classes: int) -> np.ndarray:
        """Prior probability that one draw ends up kept, per class."""
        rate = np.ones(num_classes)
        for r in (self.subsample_rate, self.filter_rate):
            if r is not None:
                rate *= np.asarray(r, np.float64)
        return rate


@dataclass
class SynthInputs:
    """Everything the stage consumes, as plain objects (the pipeline builds them from artifacts).

    ``generator`` is a zero-arg picklable factory (e.g. :class:`GeneratorSpec`, or
    ``functools.partial(load_generator, gan_dir)``); ``generator_state`` (the EMA weights) is loaded
    into it when given. Teacher and feature extractor are model directories
    (``rayflow.stages.models_io``); the ratio net is a :class:`~rayflow.dre.RatioMLP` state dict with
    ``ratio_hidden``/``ratio_dropout`` (its ``feature_dim`` is the feature net's).
    ``burnin`` skips :func:`compute_burnin` when given.
    """

    num_classes: int
    generator: Callable[[], nn.Module]
    generator_state: dict[str, torch.Tensor] | None = None
    teacher_dir: str | Path | None = None
    feature_dir: str | Path | None = None
    ratio_state: dict[str, torch.Tensor] | str | Path | None = None  # state dict or safetensors path
    ratio_hidden: tuple[int, ...] = (512, 256, 128)
    ratio_dropout: float = 0.5
    subsample: bool = True
    filter: bool = True
    rho: float = 0.9
    relabel: bool = True
    soft_labels: bool | None = None  # None: SynthConfig.soft_labels
    dre_burnin: int = 1000
    filter_burnin: int = 500
    burnin: BurninStats | None = None

    def soft(self, cfg: SynthConfig) -> bool:
        return cfg.soft_labels if self.soft_labels is None else bool(self.soft_labels)

    def uses_teacher(self, cfg: SynthConfig) -> bool:
        return self.filter or self.relabel or self.soft(cfg)

    def validate(self, cfg: SynthConfig) -> None:
        """One SynthError listing every problem, before any compute."""
        errs = []
        C = self.num_classes
        if C < 2:
            errs.append(f"num_classes must be >= 2, got {C}")
        if self.subsample:
            if self.feature_dir is None or self.ratio_state is None:
                errs.append("subsample=True needs feature_dir and ratio_state (the cDR-RS nets)")
            if self.dre_burnin <= 0:
                errs.append(f"dre_burnin must be > 0, got {self.dre_burnin}")
        if self.uses_teacher(cfg) and self.teacher_dir is None:
            need = [n for n, on in (("filter", self.filter), ("relabel", self.relabel),
                                    ("soft_labels", self.soft(cfg))) if on]
            errs.append(f"{'/'.join(need)} need(s) teacher_dir")
        if self.filter:
            try:
                check_rho(self.rho)
            except ValueError as e:
                errs.append(str(e))
            if self.filter_burnin <= 0:
                errs.append(f"filter_burnin must be > 0, got {self.filter_burnin}")
        for name, d, used in (("teacher_dir", self.teacher_dir, self.uses_teacher(cfg)),
                              ("feature_dir", self.feature_dir, self.subsample)):
            if used and d is not None and not (Path(d) / ARCH).is_file():
                errs.append(f"{name} {d} is not a model artifact (no {ARCH})")
        b = self.burnin
        if b is not None:
            for name in ("max_ratio", "subsample_rate", "cutoffs", "filter_rate"):
                v = getattr(b, name)
                if v is not None and len(v) != C:
                    errs.append(f"burnin.{name} has {len(v)} entries for {C} classes")
            if self.subsample and (b.max_ratio is None or not all(m > 0 for m in b.max_ratio)):
                errs.append("burnin.max_ratio must give a positive max ratio for every class when subsampling")
            if self.filter and b.cutoffs is None:
                errs.append("burnin.cutoffs is required when filtering")
        if errs:
            raise SynthError("synth inputs: " + "; ".join(errs))


@dataclass
class SynthOptions:
    """Executor knobs that do not change the content (so they are not part of the fingerprint)."""

    cpus_per_actor: float = 0.5  # fractional: 3 pools of 0.5 CPU leave room on 2 CPUs (no deadlock)
    threads_per_actor: int | None = None  # torch threads per actor; default max(1, int(cpus_per_actor))
    local_threads: int | None = None  # torch threads of the local executor (None: leave as is)
    max_rounds: int = 20
    runtime: RuntimeConfig | None = None  # used to start Ray when it is not running
    progress: bool = True
    progress_every_s: float = 10.0  # at most one per-shard progress line per this many seconds


# ---------------------------------------------------------------------------------------------
# burn-in


def _score_kwargs(inputs: SynthInputs, cfg: SynthConfig) -> dict[str, Any]:
    return dict(feature_dir=str(inputs.feature_dir), ratio_state=inputs.ratio_state, num_classes=inputs.num_classes,
                ratio_hidden=tuple(inputs.ratio_hidden), ratio_dropout=inputs.ratio_dropout, seed=cfg.seed,
                batch_size=cfg.batch_size)


def compute_burnin(inputs: SynthInputs, cfg: SynthConfig, *, device: str = "cpu") -> BurninStats:
    """Burn-in statistics in plain torch, as the official ``make_fake_datasets`` does.

    Per class: ``max_ratio`` = max density ratio of ``dre_burnin`` draws (and the mean acceptance
    probability under it); then ``filter_burnin`` draws that passed the rejection sampler (with that
    max frozen) give the teacher-CE cutoff = ``np.quantile(CE, rho)``.
    """
    inputs.validate(cfg)
    C, bs = inputs.num_classes, cfg.batch_size
    gen = Generate(inputs.generator, inputs.generator_state, batch_size=bs, device=device)
    stats = BurninStats()
    score = None
    if inputs.subsample:
        score = Score(**_score_kwargs(inputs, cfg), device=device)
        stats.max_ratio, stats.subsample_rate = [], []
        for c in range(C):
            n = inputs.dre_burnin
            r = score.ratios(gen.draw(c, n, derive_seed(cfg.seed, _DRE_BURNIN_STREAM, c)),
                             torch.full((n,), c, dtype=torch.long))
            top = float(r.max())
            if not top > 0:
                raise SynthError(f"density-ratio burn-in: all {n} ratios of class {c} are 0 (degenerate ratio net)")
            stats.max_ratio.append(top)
            stats.subsample_rate.append(float(np.minimum(r / top, 1.0).mean()))
        score.set_max_ratio(stats.max_ratio)
    if inputs.filter:
        label = Label(inputs.teacher_dir, num_classes=C, batch_size=bs, device=device)
        need = inputs.filter_burnin
        ces = []
        for c in range(C):
            rate = stats.subsample_rate[c] if score is not None else 1.0
            got: list[np.ndarray] = []
            have = drawn = 0
            for k in range(50):
                if have >= need:
                    break
                n = math.ceil((need - have) / max(rate, 1e-3) * 1.2) + 8
                x = gen.draw(c, n, derive_seed(cfg.seed, _FILTER_BURNIN_STREAM, c, k))
                y = torch.full((n,), c, dtype=torch.long)
                if score is not None:
                    _, acc = score.accept(x, y, key=(_BURNIN_KEY, c, k))
                    x, y = x[torch.from_numpy(acc)], y[torch.from_numpy(acc)]
                if len(x):
                    got.append(teacher_ce(torch.from_numpy(label.logits(x)), y).numpy())
                have += len(x)
                drawn += n
            if have < need:
                raise SynthError(f"filter burn-in: class {c} got only {have} of {need} subsampled samples "
                                 f"from {drawn} draws (acceptance too low)")
            ces.append(np.concatenate(got)[:need])
        cutoffs = class_cutoffs(np.concatenate(ces), np.repeat(np.arange(C), need), inputs.rho, C)
        stats.cutoffs = [float(v) for v in cutoffs]
        stats.filter_rate = [float((ce <= cut).mean()) for ce, cut in zip(ces, cutoffs)]
    return stats


# ---------------------------------------------------------------------------------------------
# planning


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


# ---------------------------------------------------------------------------------------------
# executors


def _hash_state(h: Any, state: dict[str, torch.Tensor]) -> None:
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _fingerprint(inputs: SynthInputs, cfg: SynthConfig, G: nn.Module) -> str:
    h = hashlib.sha256()
    desc = {"m_per_class": cfg.m_per_class, "batch_size": cfg.batch_size, "shard_size": cfg.shard_size,
            "seed": cfg.seed, "num_classes": inputs.num_classes, "subsample": inputs.subsample,
            "filter": inputs.filter, "rho": inputs.rho, "relabel": inputs.relabel, "soft_labels": inputs.soft(cfg),
            "dre_burnin": inputs.dre_burnin, "filter_burnin": inputs.filter_burnin,
            "ratio_hidden": list(inputs.ratio_hidden), "ratio_dropout": inputs.ratio_dropout,
            "burnin": inputs.burnin.to_dict() if inputs.burnin else None}
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
                         batch_size=cfg.batch_size),
        "score": dict(_score_kwargs(inputs, cfg), max_ratio=burnin.max_ratio) if inputs.subsample else None,
        "label": dict(teacher_dir=str(inputs.teacher_dir), num_classes=inputs.num_classes,
                      cutoffs=burnin.cutoffs if inputs.filter else None, relabel=inputs.relabel,
                      batch_size=cfg.batch_size) if inputs.uses_teacher(cfg) else None,
        "write": dict(out_dir=str(out_dir), image_shape=tuple(image_shape), num_classes=inputs.num_classes,
                      meta=header),
    }
    return kw


def _record(summary: dict[str, Any]) -> dict[str, Any]:
    """One manifest record from a ``write_shards`` summary row (numpy scalars -> JSON types)."""
    return {"shard_id": int(summary["shard_id"]), "label": int(summary["label"]), "file": str(summary["file"]),
            "n_draws": int(summary["n_draws"]), "n_accepted": int(summary["n_accepted"]),
            "n_kept": int(summary["n_kept"]), "label_counts": [int(v) for v in summary["label_counts"]]}


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


class _LocalExecutor:
    """The same step objects as the Ray pools, chained in this process (no Ray import): the fused
    actor's :class:`_StepsThenWrite`, called in a loop."""

    def __init__(self, kw: dict[str, dict | None], device: str):
        steps = [(cls, dict(k, device=device)) for cls, k in
                 ((Generate, kw["generate"]), (Score, kw["score"]), (Label, kw["label"])) if k is not None]
        self.chain = _StepsThenWrite(steps, kw["write"])

    def __call__(self, specs: list[ShardSpec]) -> Iterator[dict]:
        for spec in specs:
            summary = self.chain({k: np.array([v], np.int64) for k, v in spec.item().items()})
            yield from (_record({k: v[i] for k, v in summary.items()}) for i in range(len(summary["shard_id"])))


class _RayExecutor:
    """One Ray Data pipeline per round over ``from_items(shards)``, actor pools of up to
    ``cfg.gen_actors`` actors with fractional CPUs (all started at once when they fit with a CPU to
    spare, else autoscaling from 1); the driver only receives one small summary row per written shard.

    ``synth.fused`` (default): one pool whose actors run Generate -> Score -> Label -> write on a
    whole shard. Every step is model inference on the same device, so splitting them buys no
    placement freedom but costs a process per step and an object-store copy of every image between
    steps; fused actors scale by running more shards at once. ``fused: false``: one pool per step
    (Generate -> Score -> Label+write), for clusters where the steps want different resources.
    """

    def __init__(self, kw: dict[str, dict | None], cfg: SynthConfig, opts: SynthOptions):
        from rayflow.runtime import init_ray

        init_ray(opts.runtime)
        import ray

        ctx = ray.data.DataContext.get_current()
        if not ctx.execution_no_progress_timeout_s or ctx.execution_no_progress_timeout_s > 600:
            ctx.execution_no_progress_timeout_s = 600  # as runtime.init_ray: fail a stuck pipeline in minutes
        threads = opts.threads_per_actor or max(1, int(opts.cpus_per_actor))
        device = "cuda" if cfg.num_gpus_per_actor > 0 else "cpu"
        self.steps = [(cls, dict(kw[name], device=device, threads=threads))
                      for cls, name in ((Generate, "generate"), (Score, "score"), (Label, "label"))
                      if kw[name] is not None]
        self.write_kwargs = kw["write"]
        self.cfg, self.opts = cfg, opts
        # every pool holds at least one actor for the whole round: if their minimum does not fit
        # the cluster, Ray Data waits forever (the 2-CPU actor-pool deadlock)
        have = ray.cluster_resources()
        pools = 1 if cfg.fused else len(self.steps)
        for res, per_actor in (("CPU", opts.cpus_per_actor), ("GPU", cfg.num_gpus_per_actor)):
            need = per_actor * pools
            if need > have.get(res, 0.0) + 1e-9:
                raise SynthError(f"the synth pipeline needs {need:g} {res} for its {pools} actor pool(s) "
                                 f"({per_actor:g} per actor, at least one actor each) but the Ray cluster has "
                                 f"{have.get(res, 0.0):g}; lower {'cpus_per_actor' if res == 'CPU' else 'synth.num_gpus_per_actor'}")
        # start every actor at once when they fit with a CPU to spare for Ray Data's own tasks: the
        # autoscaler adds the 2nd actor only after the 1st is busy, seconds of one idle core per round
        # (a pool that takes *all* CPUs is the deadlock above, so the spare CPU is not optional)
        fits = int((have.get("CPU", 0.0) - 1.0) / (opts.cpus_per_actor * pools) + 1e-9)
        if cfg.num_gpus_per_actor > 0:
            fits = min(fits, int(have.get("GPU", 0.0) / (cfg.num_gpus_per_actor * pools) + 1e-9))
        self.min_actors = max(1, min(cfg.gen_actors, fits))

    def __call__(self, specs: list[ShardSpec]) -> Iterator[dict]:
        import ray
        from ray.data import ActorPoolStrategy

        ds = ray.data.from_items([s.item() for s in specs], override_num_blocks=len(specs))
        # Generate gets one work item (one shard) per call; later steps a whole block (whole shards)
        pools = [self.steps] if self.cfg.fused else [[step] for step in self.steps]
        for i, steps in enumerate(pools):
            cls, kwargs = steps[0]
            if i == len(pools) - 1:
                cls, kwargs = _StepsThenWrite, {"steps": steps, "write_kwargs": self.write_kwargs}
            ds = ds.map_batches(cls, batch_size=1 if i == 0 else None, fn_constructor_kwargs=kwargs,
                                compute=ActorPoolStrategy(min_size=self.min_actors, max_size=self.cfg.gen_actors),
                                num_cpus=self.opts.cpus_per_actor, num_gpus=self.cfg.num_gpus_per_actor)
        for row in ds.iter_rows():
            yield _record(row)


# ---------------------------------------------------------------------------------------------
# driver


def _sweep_tmp(out_dir: Path) -> None:
    """Remove temp files a killed run left behind (shards and manifest are renamed into place)."""
    for p in [*(out_dir / SHARD_DIR).glob(".*.tmp"), *out_dir.glob(f".{MANIFEST}.*.tmp")]:
        p.unlink(missing_ok=True)


def _image_shape(G: nn.Module) -> tuple[int, int, int]:
    return tuple(int(v) for v in generate(G, torch.zeros(1, dtype=torch.long), seed=0).shape[1:])


def run_synth(inputs: SynthInputs, cfg: SynthConfig, out_dir: str | Path,
              executor: Literal["ray", "local"] = "local", *, options: SynthOptions | None = None,
              on_shard: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Generate -> subsample -> teacher-label -> filter -> Parquet shards in ``out_dir``, resumably.

    Returns metrics: per-class counts (drawn, accepted by the rejection sampler, kept by the
    filter), acceptance rates (``subsample_accept_per_class``, ``filter_keep_per_class``),
    ``samples_per_s`` (kept samples produced by this call / wall), ``draws_per_s``, ``wall_s``,
    ``burnin_s``, rounds and shards (``shards_in_driver``: those of small top-up rounds, which the
    ``ray`` executor runs in this process). ``on_shard(record)`` is called after every finished shard
    has been recorded in the manifest (progress hooks, tests).
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    opts = options or SynthOptions()
    t_start = time.perf_counter()
    inputs.validate(cfg)
    C, m = inputs.num_classes, cfg.m_per_class
    out = Path(out_dir)
    G = build_generator(inputs.generator, inputs.generator_state)
    image_shape = _image_shape(G)
    header = {"num_classes": C, "image_shape": list(image_shape), "m_per_class": m, "seed": cfg.seed,
              "subsample": inputs.subsample, "filter": inputs.filter, "rho": inputs.rho,
              "relabel": inputs.relabel, "soft_labels": inputs.soft(cfg)}
    man = Manifest.open(out, _fingerprint(inputs, cfg, G), header)
    del G
    out.mkdir(parents=True, exist_ok=True)
    _sweep_tmp(out)
    local_device = "cuda" if cfg.num_gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
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
        runs: dict[str, _RayExecutor | _LocalExecutor] = {}
        t_main = time.perf_counter()
        skipped = len(man.records)
        done = draws = kept_now = in_driver = 0
        last_line = t_main
        while True:
            pending = man.pending()
            if not pending:
                kept = man.per_class("n_kept")
                if (kept >= m).all():
                    break
                if man.num_rounds >= opts.max_rounds:
                    rate = kept / np.maximum(man.per_class("n_draws"), 1)
                    short = np.flatnonzero(kept < m).tolist()
                    raise SynthError(f"after {man.num_rounds} rounds class(es) {short} still lack samples "
                                     f"(kept {kept[short].tolist()} of {m}; kept/draw {np.round(rate[short], 4).tolist()})")
                pending = plan_round(kept, man.per_class("n_draws"), burnin.expected_rate(C), m, cfg.shard_size,
                                     man.next_shard_id(), cfg.seed)
                man.add_round(pending)
                man.save()
            # a top-up round of at most one shard's draws runs in this process: starting a Ray Data
            # pipeline and its actors costs more than the draws (8 s vs 0.1 s for a 1-shard round at
            # M = 100k on 2 cores); both executors write identical shards, so the result is the same
            small = executor == "ray" and sum(s.n_draws for s in pending) <= cfg.shard_size and man.num_rounds > 1
            name = "local" if small else executor
            if name not in runs:
                runs[name] = _RayExecutor(kw, cfg, opts) if name == "ray" else _LocalExecutor(kw, local_device)
            run = runs[name]
            t_round = time.perf_counter()
            for rec in run(pending):
                man.mark_done(rec)
                man.save()
                done, draws, kept_now = done + 1, draws + rec["n_draws"], kept_now + rec["n_kept"]
                in_driver += small
                if on_shard is not None:
                    on_shard(rec)
                now = time.perf_counter()
                if opts.progress and now - last_line >= opts.progress_every_s:
                    last_line = now
                    print(f"[synth] round {man.num_rounds}: shard {rec['shard_id']} done, "
                          f"kept per class {man.per_class('n_kept').tolist()} of {m}, "
                          f"{kept_now / (now - t_main):.0f} samples/s", flush=True)
            lost = [s.shard_id for s in man.pending()]
            if lost:  # never loop on shards the executor did not report
                raise SynthError(f"shard(s) {lost[:10]} of round {man.num_rounds} ended without a summary")
            if opts.progress:
                now = time.perf_counter()
                print(f"[synth] round {man.num_rounds} finished: {len(pending)} shards in {now - t_round:.1f} s, "
                      f"kept per class {man.per_class('n_kept').tolist()} of {m}, "
                      f"{kept_now / max(now - t_main, 1e-9):.0f} samples/s, {draws / max(now - t_main, 1e-9):.0f} "
                      f"draws/s ({'top-up in the driver' if small else executor})", flush=True)
    finally:
        torch.set_num_threads(prev_threads)
    wall = time.perf_counter() - t_start
    drawn, accepted, kept = (man.per_class(f) for f in ("n_draws", "n_accepted", "n_kept"))
    return {
        "executor": executor, "num_classes": C, "m_per_class": m, "samples": m * C,
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

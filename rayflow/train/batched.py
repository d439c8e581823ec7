"""Several supervised models trained one after another in one executor run.

Why: on Ray each `fit()` starts a controller, a worker group and dataset coordinators as fresh
processes, ~15-20 s on 2 cores, more than an MLP student's training. Every item reports its final
state as a checkpoint tagged with its index, so a restarted run skips the finished items and
resumes the one in progress. Written against the executor's TrainContext: no Ray import.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rayflow.checkpoint import load_state, save_state
from rayflow.progress import Progress
from rayflow.train.job import FakeData, SupervisedJob, run_job
from rayflow.train.loop import unwrap
from rayflow.train.sources import ShardSource

if TYPE_CHECKING:
    from rayflow.executors.base import FakeSpec, TrainContext

STATE = "state.pt"
# keys of a job's returned weights that are its KD criterion's state (method adapters, CRD bank),
# not the model's: `split_criterion` separates them (the runner saves them as kd.safetensors)
CRITERION_PREFIX = "__criterion__."


def split_criterion(state: dict) -> tuple[dict, dict]:
    """(model weights, criterion state) of a job's returned weights."""
    n = len(CRITERION_PREFIX)
    return ({k: v for k, v in state.items() if not k.startswith(CRITERION_PREFIX)},
            {k[n:]: v for k, v in state.items() if k.startswith(CRITERION_PREFIX)})


def read_fake(spec: FakeSpec) -> FakeData:
    """A synth artifact's fake set in memory (executors that hand no dataset shards over)."""
    from rayflow.synth.view import read_view

    fs = read_view(spec.files, spec.sample_ids, spec.labels)  # in sample-id order: ordinal = position
    return FakeData(fs.images, fs.labels, fs.teacher_logits if spec.use_logits else None, spec.real_fraction)


def _selects(job: SupervisedJob) -> bool:
    return job.select_fakes is not None and job.select_fakes.on


def train_items(ctx: TrainContext, config: dict) -> dict[int, dict]:
    """`config["items"]`: dicts with `job` (SupervisedJob), `name`, optional `fake` (FakeSpec) and
    `dataset` (its name in the executor's datasets). Rank 0 returns {index: metrics + weights}."""
    first, start_state = 0, None
    saved = ctx.load_checkpoint(lambda d: load_state(d / STATE))
    if saved is not None:  # restarted after a failure: resume from the last report
        first, start_state = int(saved.get("item", 0)), saved
        if ctx.rank == 0:
            names = [it["name"] for it in config["items"]]
            print(f"[{names[first]}] resuming at step {int(saved['step'])} from the run's last checkpoint"
                  + (f" ({first} of {len(names)} models already done)" if first else ""), flush=True)
    out = {}
    for i, item in enumerate(config["items"]):
        if i < first:
            continue
        res = _train_item(ctx, i, item, start_state if i == first else None, config.get("tracking"))
        if ctx.rank == 0:
            out[i] = res
    return out


def _train_item(ctx: TrainContext, index: int, item: dict, start_state: dict | None,
                tracking=None) -> dict | None:
    job: SupervisedJob = item["job"]
    spec: FakeSpec | None = item.get("fake")
    t0 = time.perf_counter()
    model = job.build()
    if job.init_state is not None:
        model.load_state_dict(job.init_state)
    model = ctx.prepare(model)
    fake_source, real_fraction = None, 0.75
    if spec is not None:
        real_fraction = spec.real_fraction
        # the useful-fakes lever re-scores the fakes in this worker: held in memory, never streamed
        shard = None if _selects(job) else ctx.dataset_shard(item["dataset"])
        if shard is not None:  # streamed from the executor's dataset, split across workers
            b = job.train_cfg.batch_size
            n_fake = b - max(1, round(b * spec.real_fraction))
            fake_source = ShardSource(shard, batch_size=max(1, n_fake // ctx.world), use_logits=spec.use_logits,
                                      use_orig_label=False, seed=job.train_cfg.seed + 1,
                                      augment_ops=job.train_cfg.augment, sample_ids=spec.sample_ids,
                                      index_offset=len(job.train) if job.kd_methods else None)
        else:
            job = dataclasses.replace(job, fake=read_fake(spec))

    last = {"criterion": (start_state or {}).get("criterion")}
    # rank 0 writes the curves (TensorBoard/MLflow) under the model's own name: `tracking` is the
    # run's TrackingSpec (rayflow.tracking), or None
    tracker = tracking.open(item["name"]) if tracking is not None and ctx.rank == 0 else None

    def reporter(metrics: dict, state: dict | None) -> None:
        if tracker is not None:
            _track(tracker, metrics)
        if state is None:
            return
        last["criterion"] = state.get("criterion")
        with tempfile.TemporaryDirectory() as d:
            if ctx.rank == 0:
                save_state({**state, "item": index}, Path(d) / STATE)
                ctx.report({**metrics, "item": index}, Path(d))
            else:
                ctx.report({**metrics, "item": index})

    start = int(start_state["step"]) if start_state is not None else 0
    progress = Progress(item["name"], job.train_cfg.steps, enabled=ctx.rank == 0, start=start)
    try:
        metrics = run_job(job, model, rank=ctx.rank, world=ctx.world, device=ctx.device, reporter=reporter,
                          start_state=start_state, fake_source=fake_source, real_fraction=real_fraction,
                          progress=progress)
        if tracker is not None:
            _track(tracker, metrics)  # the final evaluation (also a resumed run's, which reports nothing)
    finally:
        if tracker is not None:
            tracker.close()
    if ctx.rank != 0:
        return None
    metrics["worker_s"] = time.perf_counter() - t0
    # Ray Train V2 refuses tensors in return values; numpy arrays travel fine.
    state = {k: v.cpu().numpy() for k, v in unwrap(model).state_dict().items()}
    state.update({CRITERION_PREFIX + k: v.cpu().numpy() for k, v in (last["criterion"] or {}).items()})
    return {"metrics": metrics, "state_dict": state}


def _track(tracker, metrics: dict) -> None:
    step = int(metrics.get("step", 0))
    for k, v in metrics.items():
        if k not in ("step", "item", "resumed") and isinstance(v, (int, float)) and not isinstance(v, bool):
            tracker.scalar(k, float(v), step)


def from_checkpoints(checkpoints: list, index: int) -> tuple[dict, dict]:
    """An item that finished before its run restarted: its newest tagged checkpoint."""
    mine = [c for c in checkpoints if c.metrics.get("item") == index]
    if not mine:
        raise RuntimeError(f"no checkpoint for item {index} of a batched training run")
    ckpt = max(mine, key=lambda c: c.metrics.get("step", 0))
    with ckpt.open() as d:
        state = load_state(Path(d) / STATE)
    weights = {**state["model"], **{CRITERION_PREFIX + k: v for k, v in (state.get("criterion") or {}).items()}}
    return weights, {k: v for k, v in ckpt.metrics.items() if k != "item"}


def train_jobs(executor, jobs: list[SupervisedJob], *, names: list[str], run_name: str, scaling,
               storage: tuple, fakes: list | None = None, tracking=None) -> list[tuple[dict, dict]]:
    """Trains `jobs` (each with its optional FakeSpec) in one executor run; (weights, metrics) per
    job, in order; a job with a KD criterion returns its state among the weights under
    CRITERION_PREFIX (see split_criterion). `wall_s` is the job's own time plus an equal share of
    the run's fixed cost (Ray start-up, teardown). `tracking` (a rayflow.tracking.TrackingSpec, or
    None): rank 0 writes each job's curves under the job's name."""
    import torch

    from rayflow.executors import FakeSpec

    fakes = fakes or [None] * len(jobs)
    items = [{"job": j, "name": n, "fake": f, "dataset": f"fake{i}"}
             for i, (j, n, f) in enumerate(zip(jobs, names, fakes))]
    datasets = {f"fake{i}": f for i, (j, f) in enumerate(zip(jobs, fakes))
                if isinstance(f, FakeSpec) and not _selects(j)}
    t0 = time.perf_counter()
    res = executor.fit(train_items, {"items": items, "tracking": tracking}, name=run_name, scaling=scaling,
                       storage=storage, datasets=datasets, keep=1 if len(items) == 1 else None)
    done = res.return_value or {}
    outs = [(done[i]["state_dict"], done[i]["metrics"]) if i in done else from_checkpoints(res.checkpoints, i)
            for i in range(len(jobs))]
    own = [m.get("worker_s", 0.0) for _, m in outs]
    share = max(0.0, time.perf_counter() - t0 - sum(own)) / len(outs)
    return [({k: torch.tensor(v) for k, v in state.items()}, dict(m, wall_s=w + share))
            for (state, m), w in zip(outs, own)]

"""Runs a training job on the configured executor: Ray Train, or in-process (`local`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rayflow.config import RuntimeConfig, ScalingConfig
from rayflow.train.job import FakeData, SupervisedJob, run_job
from rayflow.train.loop import print_reporter


@dataclass
class FakeSpec:
    """A synthetic Parquet set and how the student reads it."""

    shards_dir: str
    m_per_class: int
    real_fraction: float = 0.75
    orig_labels: bool = False  # conditioning labels instead of the (relabelled) final ones
    use_logits: bool = True  # teacher logits for the KD term


def _local_fake(spec: FakeSpec) -> FakeData:
    from rayflow.synth.io import read_fake_set

    fs = read_fake_set(spec.shards_dir, spec.m_per_class)
    return FakeData(fs.images, fs.orig_labels if spec.orig_labels else fs.labels,
                    fs.teacher_logits if spec.use_logits else None, spec.real_fraction)


@dataclass
class TrainRequest:
    """One model to train: the job, its run name, and the synthetic set it mixes in (if any)."""

    job: SupervisedJob
    name: str
    fake: FakeSpec | None = None


def run_trainings(requests: list[TrainRequest], scaling: ScalingConfig, runtime: RuntimeConfig,
                  storage: str | Path, name: str) -> list[tuple[dict, dict]]:
    """Trains `requests` in order: on Ray in one Train run called `name` (the actor start-up is
    paid once), locally one after another. -> (state_dict, metrics) per request; `wall_s` is the
    request's own time, plus an equal share of the run's fixed cost (Ray start-up, teardown)."""
    t0 = time.perf_counter()
    if runtime.executor == "ray":
        from rayflow.ray.train import run_ray_training_batch
        from rayflow.runtime import init_ray

        init_ray(runtime)
        items = [_ray_item(r, scaling) for r in requests]
        out = run_ray_training_batch(items, scaling, storage, name)
        own = [m.get("worker_s", 0.0) for _, m in out]
        share = max(0.0, time.perf_counter() - t0 - sum(own)) / len(out)
        return [(state, dict(m, wall_s=w + share)) for (state, m), w in zip(out, own)]
    results = []
    for r in requests:
        t1 = time.perf_counter()
        state, metrics = _run_local(r, scaling)
        results.append((state, dict(metrics, wall_s=time.perf_counter() - t1)))
    return results


def _ray_item(r: TrainRequest, scaling: ScalingConfig):
    from rayflow.ray.train import TrainItem

    if r.fake is None:
        return TrainItem(r.job, r.name)
    from rayflow.synth.io import fake_dataset

    b = r.job.train_cfg.batch_size
    n_fake = b - max(1, round(b * r.fake.real_fraction))
    r.job.extra["real_fraction"] = r.fake.real_fraction
    # materialized before fit(): the Train workers hold the CPUs, and read tasks scheduled after
    # that would wait for them forever (seen on 2 cores)
    return TrainItem(r.job, r.name, fake_dataset(r.fake.shards_dir, r.fake.m_per_class).materialize(),
                     {"batch_size": max(1, n_fake // scaling.num_workers),
                      "use_logits": r.fake.use_logits, "use_orig_label": r.fake.orig_labels})


def _run_local(r: TrainRequest, scaling: ScalingConfig) -> tuple[dict, dict]:
    job = r.job
    if r.fake is not None:
        job.fake = _local_fake(r.fake)
    device = "cuda" if scaling.use_gpu and torch.cuda.is_available() else "cpu"
    # one process does the work of all workers, so it gets all their CPUs as threads
    torch.set_num_threads(scaling.threads_per_worker or max(1, int(scaling.cpus_per_worker * scaling.num_workers)))
    model = job.build()
    if job.init_state is not None:
        model.load_state_dict(job.init_state)
    model.to(device)
    metrics = run_job(job, model, device=device, reporter=print_reporter(r.name, job.train_cfg.steps))
    return {k: v.cpu() for k, v in model.state_dict().items()}, metrics

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


def run_training(job: SupervisedJob, scaling: ScalingConfig, runtime: RuntimeConfig,
                 storage: str | Path, name: str, fake: FakeSpec | None = None) -> tuple[dict, dict]:
    """-> (state_dict, metrics). Metrics gain `wall_s`, the whole call including Ray start-up."""
    t0 = time.perf_counter()
    if runtime.executor == "ray":
        from rayflow.ray.train import run_ray_training
        from rayflow.runtime import init_ray

        init_ray(runtime)
        kw = {}
        if fake is not None:
            from rayflow.synth.io import fake_dataset

            b = job.train_cfg.batch_size
            n_fake = b - max(1, round(b * fake.real_fraction))
            job.extra["real_fraction"] = fake.real_fraction
            kw = {"fake_dataset": fake_dataset(fake.shards_dir, fake.m_per_class).materialize(),
                  "fake_ingest": {"batch_size": max(1, n_fake // scaling.num_workers),
                                  "use_logits": fake.use_logits, "use_orig_label": fake.orig_labels}}
        state, metrics = run_ray_training(job, scaling, storage, name, **kw)
    else:
        if fake is not None:
            job.fake = _local_fake(fake)
        device = "cuda" if scaling.use_gpu and torch.cuda.is_available() else "cpu"
        # one process does the work of all workers, so it gets all their CPUs as threads
        torch.set_num_threads(scaling.threads_per_worker or max(1, int(scaling.cpus_per_worker * scaling.num_workers)))
        model = job.build()
        if job.init_state is not None:
            model.load_state_dict(job.init_state)
        model.to(device)
        metrics = run_job(job, model, device=device, reporter=print_reporter(name, job.train_cfg.steps))
        state = {k: v.cpu() for k, v in model.state_dict().items()}
    metrics = dict(metrics, wall_s=time.perf_counter() - t0)
    return state, metrics

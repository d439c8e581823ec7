"""Runs a training job on the configured executor: Ray Train, or in-process (`local`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rayflow.config import RuntimeConfig, ScalingConfig
from rayflow.train.job import SupervisedJob, run_job
from rayflow.train.loop import print_reporter


def run_training(job: SupervisedJob, scaling: ScalingConfig, runtime: RuntimeConfig,
                 storage: str | Path, name: str) -> tuple[dict, dict]:
    """-> (state_dict, metrics). Metrics gain `wall_s`, the whole call including Ray start-up."""
    t0 = time.perf_counter()
    if runtime.executor == "ray":
        from rayflow.ray.train import run_ray_training
        from rayflow.runtime import init_ray

        init_ray(runtime)
        state, metrics = run_ray_training(job, scaling, storage, name)
    else:
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

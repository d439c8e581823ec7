"""The executor seam: everything rayflow asks of Ray goes through here (and `runtime.py`).

`get_executor(runtime)` is the one place where `runtime.executor` picks Ray or the in-process
executor; no other module imports `ray`, so `executor: local` runs on machines without it.
"""

from __future__ import annotations

from rayflow.config import RuntimeConfig
from rayflow.executors.base import (
    Checkpoint,
    Executor,
    FakeSpec,
    FitResult,
    PoolError,
    PoolSpec,
    StepSpec,
    TrainContext,
    rows,
    worker_threads,
)
from rayflow.executors.local import LocalExecutor

__all__ = ["Checkpoint", "Executor", "FakeSpec", "FitResult", "LocalExecutor", "PoolError", "PoolSpec", "StepSpec",
           "TrainContext", "check_gpu_request", "get_executor", "rows", "worker_threads"]


def get_executor(runtime: RuntimeConfig) -> Executor:
    if runtime.executor == "ray":
        from rayflow.executors.ray_executor import RayExecutor

        return RayExecutor(runtime)
    return LocalExecutor()


def check_gpu_request(cfg) -> None:
    """Fails before any compute when an embedded Ray run asks for GPUs this machine lacks: Train's
    placement group (`scaling.use_gpu`) would otherwise wait for them until its start-up timeout.
    A cluster (runtime.address / RAY_ADDRESS) may have GPU nodes this machine lacks; the local
    executor falls back to the CPU."""
    import torch

    from rayflow.config import ConfigError
    from rayflow.runtime import embedded

    rt = cfg.runtime
    if rt.executor != "ray" or not embedded(rt) or torch.cuda.is_available():
        return
    asked = [f for f, on in (("scaling.use_gpu", cfg.scaling.use_gpu),
                             ("synth.num_gpus_per_actor", cfg.synth.num_gpus_per_actor > 0)) if on]
    if asked:
        raise ConfigError(f"{' and '.join(asked)} ask(s) for GPUs, but this machine has no CUDA device for the "
                          "embedded Ray; unset it, or set runtime.address to a cluster with GPU nodes")


def ray_fake_dataset(spec: FakeSpec):
    """A view's rows as a Ray Dataset (tests, notebooks)."""
    from rayflow.executors.ray_data import fake_dataset

    return fake_dataset(spec)

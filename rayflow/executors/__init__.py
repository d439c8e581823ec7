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
           "TrainContext", "get_executor", "rows", "worker_threads"]


def get_executor(runtime: RuntimeConfig) -> Executor:
    if runtime.executor == "ray":
        from rayflow.executors.ray_executor import RayExecutor

        return RayExecutor(runtime)
    return LocalExecutor()


def ray_fake_dataset(spec: FakeSpec):
    """A view's rows as a Ray Dataset (tests, notebooks)."""
    from rayflow.executors.ray_data import fake_dataset

    return fake_dataset(spec)

"""The Ray executor: Ray Train for `fit`, Ray Data actor pools for `map_batches`, a Ray task for
`remote`; Ray is started (embedded, or the cluster in RAY_ADDRESS) on first use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ray

from rayflow.config import RuntimeConfig
from rayflow.executors.base import FakeSpec, FitResult, PoolSpec, StepSpec
from rayflow.runtime import embedded, init_ray


class RayExecutor:
    name = "ray"

    def __init__(self, runtime: RuntimeConfig):
        self.runtime = runtime

    def fit(self, fn: Callable, config: dict, *, name: str, scaling: Any, storage: tuple[str, Any],
            datasets: dict[str, FakeSpec] | None = None, keep: int | None = None,
            max_failures: int = 1) -> FitResult:
        from rayflow.executors.ray_train import ray_fit

        init_ray(self.runtime)
        return ray_fit(fn, config, name=name, scaling=scaling, storage=storage, datasets=datasets, keep=keep,
                       max_failures=max_failures)

    def map_batches(self, items: list[dict], steps: Callable[[str, int | None], list[StepSpec]],
                    pool: PoolSpec) -> Iterator[dict]:
        from rayflow.executors.ray_data import ray_map_batches

        init_ray(self.runtime)
        return ray_map_batches(items, steps, pool)

    def tune(self, trial: Callable, **kw: Any) -> list[dict]:
        from rayflow.executors.ray_tune import ray_tune

        init_ray(self.runtime)
        try:
            return ray_tune(trial, **kw)
        finally:
            # Tune leaves session state in the driver under which a later TorchTrainer.fit() here
            # never gets its workers (seen on Ray 2.60: worker group start-up timeout with every CPU
            # free); the next stage restarts Ray, as a fresh driver would
            if embedded(self.runtime):
                ray.shutdown()

    def remote(self, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0, **kwargs: Any) -> Any:
        init_ray(self.runtime)
        return ray.get(ray.remote(num_cpus=num_cpus, num_gpus=0)(fn).remote(*args, **kwargs))

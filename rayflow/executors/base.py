"""The operations stages need from a compute backend, as plain types (no Ray import).

Three operations cover every stage: run a training function on N workers (`fit`), map a chain of
batch steps over work items (`map_batches`), and run one function elsewhere (`remote`). Each has a
Ray implementation (`executors/ray_*.py`) and an in-process one (`executors/local.py`); a stage
never knows which it got, so the numeric code runs, and is tested, without Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch


class PoolError(RuntimeError):
    """The cluster cannot hold the actor pools a pipeline needs (said before the pipeline starts)."""


@dataclass
class FakeSpec:
    """The fake rows a student reads (a view of the scored pool) and how it mixes them in."""

    files: Any  # per row: the Parquet file of the pool holding it
    sample_ids: Any  # per row: its stable id in the pool
    labels: Any  # per row: the label the student trains on
    real_fraction: float = 0.75
    use_logits: bool = True  # teacher logits for the KD term


class TrainContext(Protocol):
    """What a training function sees of its worker: rank, device, checkpoints, data shards."""

    rank: int
    world: int
    device: torch.device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Moves (and on several workers wraps in DDP) the model."""

    def load_checkpoint(self, read: Callable[[Path], Any]) -> Any:
        """`read(dir)` on the newest committed checkpoint of this run, or None on a fresh start."""

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        """Records metrics; with a directory, commits it as the run's newest checkpoint (every rank
        calls it; only rank 0's directory is kept)."""

    def dataset_shard(self, name: str) -> Any:
        """This worker's shard of the dataset `name` given to `fit` (an object with
        `iter_batches`), or None when the executor hands fake sets over in memory instead."""


@dataclass
class Checkpoint:
    """A committed checkpoint of a finished run: its reported metrics and a way to read it."""

    metrics: dict
    _open: Callable[[], AbstractContextManager[Path]]

    def open(self) -> AbstractContextManager[Path]:
        """A context manager giving a local directory with the checkpoint's files."""
        return self._open()


@dataclass
class FitResult:
    return_value: Any  # rank 0's return value
    checkpoints: list[Checkpoint] = field(default_factory=list)  # committed, oldest first
    path: str = ""


@dataclass
class StepSpec:
    """A callable class and its constructor arguments: built once per actor (or per call in
    process), then called on batches (dicts of numpy arrays)."""

    cls: type
    kwargs: dict


@dataclass
class PoolSpec:
    """Resources of the actors that run a `map_batches` chain."""

    max_actors: int = 2
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    threads_per_actor: int | None = None


class Executor(Protocol):
    name: str

    def fit(self, fn: Callable[[TrainContext, dict], Any], config: dict, *, name: str, scaling: Any,
            storage: tuple[str, Any], datasets: dict[str, FakeSpec] | None = None,
            keep: int | None = None, max_failures: int = 1) -> FitResult:
        """Runs `fn(ctx, config)` on `scaling.num_workers` workers; a run of the same `name` in
        `storage` (a `(path, pyarrow filesystem or None)` pair) resumes from its newest checkpoint."""

    def map_batches(self, items: list[dict], steps: Callable[[str, int | None], list[StepSpec]],
                    pool: PoolSpec) -> Iterator[dict]:
        """Feeds each item (a dict of scalars) as a one-row batch through the chain
        `steps(device, threads)` (each step's output is the next one's input) and yields the last
        step's output rows. With several steps, the Ray executor gives each its own actor pool."""

    def remote(self, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, run as one task (Ray) or in this process (local)."""

    def tune(self, trial: Callable[[dict], dict], *, searcher: Any, trials: int, metric: str, mode: str,
             to_error: Callable[[float], float], storage: tuple[str, Any], name: str, asha: dict | None,
             max_concurrent: int) -> list[dict]:
        """A search: `trial(config) -> metrics` for the configs `searcher` (ask/tell) proposes, up to
        `trials`; Ray Tune trials (ASHA on `samples_seen`, restorable) or in-process one by one."""


def rows(batch: dict) -> Iterator[dict]:
    """The rows of a columnar batch (dict of equal-length arrays) as dicts."""
    n = len(next(iter(batch.values()))) if batch else 0
    for i in range(n):
        yield {k: v[i] for k, v in batch.items()}


def worker_threads(scaling: Any, in_process: bool = False) -> int:
    """Torch threads per worker; one process doing all workers' work gets all their CPUs."""
    if scaling.threads_per_worker:
        return scaling.threads_per_worker
    cpus = scaling.cpus_per_worker * (scaling.num_workers if in_process else 1)
    return max(1, int(cpus))

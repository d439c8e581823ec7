"""Ray Train behind `Executor.fit`: one TorchTrainer setup for every training stage (teacher,
students, cGAN), and the worker-side TrainContext. Checkpoints go through Ray's Checkpoint API."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer

from rayflow.executors.base import Checkpoint, FakeSpec, FitResult, worker_threads
from rayflow.train.diverged import LossNotFinite

STOPPED = "__rayflow_loss_not_finite__"


class RayTrainContext:
    """TrainContext of a Ray Train worker."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def load_checkpoint(self, read: Callable[[Path], Any]) -> Any:
        ckpt = ray.train.get_checkpoint()  # the newest in Ray's committed record of this run
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return read(Path(d))

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def dataset_shard(self, name: str) -> Any:
        return ray.train.get_dataset_shard(name)


def _worker(config: dict) -> Any:
    from rayflow.runtime import quiet_ray_worker

    torch.set_num_threads(config["threads"])
    quiet_ray_worker()
    ctx = RayTrainContext()
    try:
        return config["fn"](ctx, config["config"])
    except LossNotFinite as e:
        if ctx.world > 1:  # the other ranks wait in a collective: Train must tear the group down
            raise
        return {STOPPED: str(e)}  # one worker: no traceback from Train, no retry of a run that diverges again


def _checkpoint(ckpt: Any, metrics: dict) -> Checkpoint:
    @contextlib.contextmanager
    def open_dir():
        with ckpt.as_directory() as d:
            yield Path(d)

    return Checkpoint(dict(metrics), open_dir)


def scaling_config(scaling: Any) -> ray.train.ScalingConfig:
    """Train's worker resources: `cpus_per_worker` CPUs each, and one GPU each with `use_gpu` (Train
    then sets every worker's device to its GPU, which RayTrainContext.device reports)."""
    return ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                   resources_per_worker={"CPU": scaling.cpus_per_worker})


def lean_callbacks(callbacks: list, *, datasets: bool, cleaner: bool) -> list:
    """Train V2's default controller callbacks less those that would start an actor process per fit
    for nothing (each ≈ 1.7 s of a 13 s empty fit on 2 cores): the Ray Data shard manager when the run
    has no Datasets, and without `cleaner` the detached placement-group cleaner. Ray is pinned
    (constraints.txt); tests/test_ray_fit.py checks the class names."""
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    drop = (() if datasets else (DatasetsCallback,)) + (() if cleaner else (PlacementGroupCleanerCallback,))
    return [c for c in callbacks if not isinstance(c, drop)]


@contextlib.contextmanager
def _in_order():
    """Ray Data keeps the fake set's block order while a fit's Datasets are materialized and its
    workers' DataContext is taken: by default blocks come in the order their read tasks finish, and
    a student trained on a set of several shards differed between two runs of the same config (the
    tiny run's raw-fake row: 93.14 / 93.51 %); the workers' seeded shuffle needs the same input."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


def ray_fit(fn: Callable, config: dict, *, name: str, scaling: Any, storage: tuple[str, Any],
            datasets: dict[str, FakeSpec] | None = None, keep: int | None = None,
            max_failures: int = 1) -> FitResult:
    """`fn(ctx, config)` on a TorchTrainer; fake sets become Ray Datasets split across workers."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    from rayflow.executors.ray_data import fake_dataset
    from rayflow.runtime import started_here

    path, fs = storage
    callbacks = []
    tuned = _in_tune_session()
    if tuned:  # a Tune trial: its scheduler sees the run's intermediate reports
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    # the fake sets in order both when they are read and when Train copies the current DataContext
    # into its workers (as the trainer is built)
    with _in_order():
        # materialized before fit(): the Train workers hold the CPUs, and read tasks scheduled after
        # that would wait for them forever (seen on 2 cores)
        ds = {k: fake_dataset(s).materialize() for k, s in (datasets or {}).items()}
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"fn": fn, "config": config, "threads": worker_threads(scaling)},
            datasets=ds or None,
            scaling_config=scaling_config(scaling),
            run_config=ray.train.RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                                           failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
                                           logging_config=ray.train.LoggingConfig(log_level="WARNING"),
                                           callbacks=callbacks),
        )
    # Train V2 swaps in its own SIGINT handler for good ("graceful abort", then exit code 1 with no
    # message); rayflow.interrupt's KeyboardInterrupt + ray.shutdown ends the run the same way
    # a kill does, and the next run resumes from the committed record
    if hasattr(trainer, "_register_sigint_handler"):
        trainer._register_sigint_handler = lambda controller: None
    # The cleaner frees a controller's CPUs when the controller dies while Ray lives on: a Tune trial
    # that ASHA stops (tuning/search.py `with_cleaner_visible`), a driver of a cluster. An embedded
    # Ray's own driver runs no trial here and takes the instance down with it.
    default = trainer._create_default_callbacks
    cleaner = tuned or not started_here()
    trainer._create_default_callbacks = lambda: lean_callbacks(default(), datasets=bool(ds), cleaner=cleaner)
    result = trainer.fit()
    if result.error:
        raise result.error
    if isinstance(result.return_value, dict) and STOPPED in result.return_value:
        raise LossNotFinite(result.return_value[STOPPED])
    ckpts = sorted(result.best_checkpoints or [], key=lambda cm: str(cm[0].path))
    return FitResult(result.return_value, [_checkpoint(c, m) for c, m in ckpts], str(result.path))

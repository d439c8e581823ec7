"""Ray Train driver: a SupervisedJob on a TorchTrainer (DDP across workers, checkpoints, retries)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayflow.checkpoint import load_state, save_state
from rayflow.config import ScalingConfig
from rayflow.data.transforms import augment, to_float
from rayflow.train.job import SupervisedJob, run_job
from rayflow.train.loop import unwrap
from rayflow.train.sources import Batch


def _worker_loop(config: dict) -> dict:
    """Trains `config["items"]` one after another in this worker group (one Ray Train run for
    several small models: each fit() costs ~15-20 s of actor start-up on a 2-core machine).

    Every item reports its final state as a checkpoint tagged with its index, so a restarted
    group skips the items that finished and resumes the one in progress."""
    import ray.train

    torch.set_num_threads(config["threads"])
    quiet_ray_worker()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    first, start_state = 0, None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # restarted after a worker failure: resume from the last report
        with ckpt.as_directory() as d:
            saved = load_state(Path(d) / "state.pt")
        first, start_state = int(saved.get("item", 0)), saved
    out = {}
    for i, item in enumerate(config["items"]):
        if i < first:
            continue
        res = _train_item(i, item, rank, world, start_state if i == first else None)
        if rank == 0:
            out[i] = res
    return out


def _train_item(index: int, item: dict, rank: int, world: int, start_state: dict | None) -> dict | None:
    """Trains one item; rank 0 returns its metrics and weights."""
    import ray.train
    import ray.train.torch

    job: SupervisedJob = item["job"]
    t0 = time.perf_counter()
    model = job.build()
    if job.init_state is not None:
        model.load_state_dict(job.init_state)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    fake_source = None
    if item.get("fake_ingest"):
        fake_source = ShardSource(ray.train.get_dataset_shard(item["dataset"]), **item["fake_ingest"],
                                  seed=job.train_cfg.seed + 1, augment_ops=job.train_cfg.augment)

    def reporter(metrics: dict, state: dict | None) -> None:
        if state is not None:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    save_state({**state, "item": index}, Path(d) / "state.pt")
                    ray.train.report({**metrics, "item": index},
                                     checkpoint=ray.train.Checkpoint.from_directory(d))
                else:
                    ray.train.report({**metrics, "item": index})
        elif rank == 0:
            print(f"[{item['name']}] step {metrics['step']}/{job.train_cfg.steps} "
                  f"loss {metrics['train_loss']:.4f} {metrics['images_per_s']:.0f} img/s", flush=True)

    metrics = run_job(job, model, rank=rank, world=world, device=device, reporter=reporter,
                      start_state=start_state, fake_source=fake_source)
    if rank != 0:
        return None
    metrics["worker_s"] = time.perf_counter() - t0
    # Train V2 refuses tensors in return values; numpy arrays travel fine.
    return {"metrics": metrics, "state_dict": {k: v.cpu().numpy() for k, v in unwrap(model).state_dict().items()}}


def quiet_train_reports() -> None:
    """Train V2 logs every ``ray.train.report`` at INFO with its whole metrics dict (our GAN
    metrics carry the training curve, so the line grows with every checkpoint) under a logger
    named by file path, which ``LoggingConfig(log_level=...)`` does not reach."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def quiet_ray_worker() -> None:
    """Ray Data and Train V2 noise off in a Train worker (its own process, own DataContext)."""
    import warnings

    from rayflow.runtime import quiet_ray_data

    quiet_ray_data()
    quiet_train_reports()
    warnings.filterwarnings("ignore", module=r"ray\..*")


class ShardSource:
    """Fake batches streamed from this worker's Ray Data shard of the synthetic Parquet set.

    The first epoch streams from Ray Data. If the shard turns out small (< `cache_mb`), its rows
    are kept and later epochs reshuffle them in memory: every `iter_batches` pass is a new Ray
    Data execution with its own start-up, and a small fake set with 75 % fakes per batch is
    re-read dozens of times per student (the demo's 3,000 fakes: 24 epochs in 1,500 steps).
    Larger shards keep streaming every epoch, so memory stays bounded by `cache_mb`.
    """

    def __init__(self, shard, batch_size: int, use_logits: bool, use_orig_label: bool, seed: int,
                 augment_ops=(), cache_mb: float = 512.0):
        self.shard, self.bs, self.use_logits, self.orig = shard, batch_size, use_logits, use_orig_label
        self.ops, self.seed = list(augment_ops), seed
        self.cache_bytes = cache_mb * 2**20
        self.g = torch.Generator().manual_seed(seed)
        self._it = self._batches()

    def _stream(self, epoch: int):
        yield from self.shard.iter_batches(batch_size=self.bs, batch_format="numpy", drop_last=True,
                                           local_shuffle_buffer_size=4 * self.bs, local_shuffle_seed=self.seed + epoch)

    def _batches(self):
        cached: list[dict] | None = []
        size, n = 0, 0
        for b in self._stream(0):
            n += 1
            if cached is not None:
                size += sum(v.nbytes for v in b.values())
                if size <= self.cache_bytes:
                    cached.append(b)
                else:
                    cached = None
            yield b
        if n == 0:
            raise ValueError(f"the fake-data shard holds fewer than one batch ({self.bs} rows)")
        epoch = 1
        if cached is None:
            while True:
                yield from self._stream(epoch)
                epoch += 1
        rows = {k: np.concatenate([b[k] for b in cached]) for k in cached[0]}
        del cached
        total = len(next(iter(rows.values())))
        rng = np.random.default_rng(self.seed)
        while True:
            order = rng.permutation(total)
            for i in range(0, total - self.bs + 1, self.bs):
                idx = order[i:i + self.bs]
                yield {k: v[idx] for k, v in rows.items()}
            epoch += 1

    def next_batch(self) -> Batch:
        b = next(self._it)
        x = to_float(torch.tensor(b["image"]))
        if self.ops:
            x = augment(x, self.ops, self.g)
        out = Batch(x=x, y=torch.tensor(b["orig_label" if self.orig else "label"]).long())
        if self.use_logits:
            out["t"] = torch.tensor(b["teacher_logits"]).float()
        return out


def run_ray_training(job: SupervisedJob, scaling: ScalingConfig, storage: str | Path, name: str,
                     max_failures: int = 1, fake_dataset=None, fake_ingest: dict | None = None) -> tuple[dict, dict]:
    """Returns (state_dict, final metrics) of rank 0. `fake_dataset` (a Ray Dataset of the synthetic
    Parquet set) is split across workers and streamed into the fake half of every batch."""
    return run_ray_training_batch([TrainItem(job, name, fake_dataset, fake_ingest)], scaling, storage, name,
                                  max_failures=max_failures)[0]


@dataclass
class TrainItem:
    """One model of a batched Ray Train run, with its optional fake-data Dataset."""

    job: SupervisedJob
    name: str
    fake_dataset: Any = None
    fake_ingest: dict | None = None


def run_ray_training_batch(items: list[TrainItem], scaling: ScalingConfig, storage: str | Path, name: str,
                           max_failures: int = 1) -> list[tuple[dict, dict]]:
    """Trains `items` in order in one TorchTrainer run; returns (state_dict, metrics) per item."""
    import ray.train
    from ray.train.torch import TorchTrainer

    threads = scaling.threads_per_worker or max(1, int(scaling.cpus_per_worker))
    datasets = {f"fake{i}": it.fake_dataset for i, it in enumerate(items) if it.fake_dataset is not None}
    loop_items = [{"job": it.job, "name": it.name, "fake_ingest": it.fake_ingest, "dataset": f"fake{i}"}
                  for i, it in enumerate(items)]
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"items": loop_items, "threads": threads},
        datasets=datasets or None,
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=os.path.abspath(storage),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            # one final checkpoint per item is kept: items finished before a restart are read back from them
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1 if len(items) == 1 else None),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    done = result.return_value or {}
    out = []
    for i in range(len(items)):
        if i in done:
            sd, metrics = done[i]["state_dict"], done[i]["metrics"]
            out.append(({k: torch.tensor(v) for k, v in sd.items()}, metrics))
        else:
            out.append(_from_checkpoint(result, i))
    return out


def _from_checkpoint(result, index: int) -> tuple[dict, dict]:
    """An item that finished before the worker group restarted: its last tagged checkpoint."""
    mine = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("item") == index]
    if not mine:
        raise RuntimeError(f"Ray Train run {result.path}: no checkpoint for item {index}")
    ckpt, metrics = max(mine, key=lambda cm: cm[1].get("step", 0))
    with ckpt.as_directory() as d:
        state = load_state(Path(d) / "state.pt")
    return state["model"], {k: v for k, v in metrics.items() if k != "item"}

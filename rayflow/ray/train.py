"""Ray Train driver: a SupervisedJob on a TorchTrainer (DDP across workers, checkpoints, retries)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from rayflow.checkpoint import load_state, save_state
from rayflow.config import ScalingConfig
from rayflow.train.job import SupervisedJob, run_job
from rayflow.train.loop import unwrap


def _worker_loop(config: dict) -> dict:
    import ray.train
    import ray.train.torch

    job: SupervisedJob = config["job"]
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = job.build()
    if job.init_state is not None:
        model.load_state_dict(job.init_state)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    start_state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # restarted after a worker failure: resume from the last report
        with ckpt.as_directory() as d:
            start_state = load_state(Path(d) / "state.pt")

    def reporter(metrics: dict, state: dict | None) -> None:
        if state is not None:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    save_state(state, Path(d) / "state.pt")
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                else:
                    ray.train.report(metrics)
        elif rank == 0:
            print(f"[{config['name']}] step {metrics['step']}/{job.train_cfg.steps} "
                  f"loss {metrics['train_loss']:.4f} {metrics['images_per_s']:.0f} img/s", flush=True)

    metrics = run_job(job, model, rank=rank, world=world, device=device, reporter=reporter,
                      start_state=start_state)
    if rank == 0:
        # Train V2 refuses tensors in return values; numpy arrays travel fine.
        return {"metrics": metrics, "state_dict": {k: v.cpu().numpy() for k, v in unwrap(model).state_dict().items()}}
    return {}


def run_ray_training(job: SupervisedJob, scaling: ScalingConfig, storage: str | Path, name: str,
                     max_failures: int = 1) -> tuple[dict, dict]:
    """Returns (state_dict, final metrics) of rank 0."""
    import ray.train
    from ray.train.torch import TorchTrainer

    threads = scaling.threads_per_worker or max(1, int(scaling.cpus_per_worker))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job, "threads": threads, "name": name},
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=os.path.abspath(storage),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    out = result.return_value
    return {k: torch.tensor(v) for k, v in out["state_dict"].items()}, out["metrics"]

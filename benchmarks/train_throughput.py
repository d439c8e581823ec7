"""Images/s of one training epoch: plain torch loop vs the Ray Train path (1 and 2 workers).

All rows run in this process's session on the same data, model and thread budget, so the ratio
is a like-for-like overhead figure. Ray's fixed start-up (actor launch, process group, teardown)
is reported separately from the epoch itself.

    python benchmarks/train_throughput.py [--model resnet8] [--n 10000] [--batch 64] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from common import record

from rayflow.config import DataConfig, ModelConfig, RuntimeConfig, ScalingConfig, TrainConfig
from rayflow.data import load_splits
from rayflow.train.job import SupervisedJob, run_job


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--n", type=int, default=10_000, help="training images (one epoch)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--data", default="fashion_mnist")
    args = ap.parse_args()

    splits = load_splits(DataConfig(name=args.data, n_per_class=args.n // 10))
    steps = len(splits.train) // args.batch
    job = SupervisedJob(model=ModelConfig(name=args.model),
                        train_cfg=TrainConfig(steps=steps, batch_size=args.batch, augment=["crop", "flip"]),
                        train=splits.train, log_every=10**9)
    print(f"{args.model}, {len(splits.train)} Fashion-MNIST images, batch {args.batch}, {steps} steps, "
          f"{args.cpus} CPUs, torch {torch.__version__}", flush=True)

    rows = []
    torch.set_num_threads(args.cpus)
    t0 = time.perf_counter()
    m = run_job(job, job.build())
    wall = time.perf_counter() - t0
    rows.append(("plain torch loop", args.cpus, m["elapsed_s"], m["images_per_s"], wall - m["elapsed_s"]))

    from rayflow.executors import get_executor
    from rayflow.runtime import init_ray
    from rayflow.train.batched import train_jobs

    t0 = time.perf_counter()
    init_ray(RuntimeConfig(num_cpus=args.cpus))
    init_s = time.perf_counter() - t0
    for workers in (1, 2):
        scaling = ScalingConfig(num_workers=workers, cpus_per_worker=args.cpus / workers,
                                threads_per_worker=max(1, args.cpus // workers))
        t0 = time.perf_counter()
        name = f"bench-{workers}-{time.time_ns()}"
        (_, m), = train_jobs(get_executor(RuntimeConfig(num_cpus=args.cpus)), [job], names=[name], run_name=name,
                             scaling=scaling, storage=("/tmp/rayflow-bench", None))
        wall = time.perf_counter() - t0
        rows.append((f"Ray Train, {workers} worker{'s' * (workers > 1)}", args.cpus, m["elapsed_s"],
                     m["images_per_s"] * workers, wall - m["elapsed_s"]))

    base = rows[0][2]
    print(f"\n{'path':<22} {'CPUs':>4} {'epoch s':>8} {'img/s':>8} {'epoch vs plain':>15} {'fixed start-up s':>17}")
    for name, cpus, ep, ips, fixed in rows:
        print(f"{name:<22} {cpus:>4} {ep:>8.2f} {ips:>8.0f} {ep / base:>14.2f}x {fixed:>17.1f}")
    print(f"(ray.init once: {init_s:.1f} s; target: Ray Train epoch <= 1.2x the plain loop)")
    record("train", [dict(path=name, cpus=cpus, epoch_s=ep, images_per_s=ips, vs_plain=ep / base, fixed_s=fixed)
                     for name, cpus, ep, ips, fixed in rows], ray_init_s=init_s, model=args.model, n=len(splits.train))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a cGAN-KD student as its fake set grows (M = 10k -> 100k), Ray Train vs in-process.

A student trains a fixed number of steps on 1,000 real Fashion-MNIST images plus M fakes from a
Parquet set in the synth stage's layout (random pixels and logits: memory and speed do not depend
on them). The Ray row streams the fakes from Ray Data into the Train worker (`ShardSource`, which
keeps at most `cache_mb` of rows); the local row is the in-process executor, which reads the
student's whole view into memory (`read_fake`). Each case runs in a fresh child process; the parent
samples the child's process tree (driver, Train worker, Ray Data read tasks) every 0.25 s.

    python benchmarks/student_memory.py [--m 10000,100000] [--steps 300] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import MB, growth_table, record, run_child

SHARD, K, SHAPE = 2000, 10, (1, 28, 28)


def write_fakes(root: Path, m: int) -> list[str]:
    import pyarrow.parquet as pq

    from rayflow.synth.io import shard_schema, shard_table

    schema = shard_schema(SHAPE, K)
    rng = np.random.default_rng(0)
    files = []
    for s in range(-(-m // SHARD)):
        n = min(SHARD, m - s * SHARD)
        labels = np.arange(n) % K
        cols = dict(shard_id=np.full(n, s), draw=np.arange(n), image=rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
                    label=labels, orig_label=labels, ratio=np.ones(n, np.float32), teacher_ce=np.zeros(n, np.float32),
                    teacher_logits=rng.normal(size=(n, K)).astype(np.float32), accepted=np.ones(n, bool))
        path = root / f"shard-{s:05d}.parquet"
        pq.write_table(shard_table(cols, schema), path)
        files.append(str(path))
    return files


def child(executor: str, m: int, root: Path, steps: int, cpus: int) -> None:
    import pyarrow.parquet as pq
    import torch

    from rayflow.config import DataConfig, ModelConfig, RuntimeConfig, ScalingConfig, TrainConfig
    from rayflow.data import load_splits
    from rayflow.executors import FakeSpec, get_executor
    from rayflow.train.batched import train_jobs
    from rayflow.train.job import SupervisedJob

    torch.set_num_threads(cpus)
    files = sorted(str(p) for p in (root / f"m{m}").glob("*.parquet"))
    ids = np.concatenate([pq.read_table(f, columns=["sample_id"])["sample_id"].to_numpy() for f in files])
    # one str object per shard, referenced by each of its rows: how the pipeline's views hold them
    owner = np.repeat(np.array(files, dtype=object), [pq.read_metadata(f).num_rows for f in files])
    spec = FakeSpec(files=owner, sample_ids=ids, labels=np.arange(len(ids)) % K, real_fraction=0.25)
    splits = load_splits(DataConfig(name="fashion_mnist", n_per_class=100))
    job = SupervisedJob(model=ModelConfig(name="resnet8"), train=splits.train, log_every=10**9, kd_alpha=0.9,
                        train_cfg=TrainConfig(steps=steps, batch_size=64, augment=[], optim={"lr": 0.05}))
    runtime = RuntimeConfig(address="local", num_cpus=cpus, object_store_memory_mb=1024, executor=executor)
    ex = get_executor(runtime)
    ray_start_s = 0.0
    if executor == "ray":  # a pipeline starts Ray once for all its stages: timed apart
        from rayflow.runtime import init_ray

        t0 = time.perf_counter()
        init_ray(runtime)
        ray_start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    (_, metrics), = train_jobs(ex, [job], names=["student"], run_name=f"mem-{executor}-{m}-{time.time_ns()}",
                               scaling=ScalingConfig(num_workers=1, cpus_per_worker=cpus),
                               storage=(str(root / "ray_storage"), None), fakes=[spec])
    print("RESULT " + json.dumps(dict(wall_s=time.perf_counter() - t0, ray_start_s=ray_start_s,
                                      train_loss=float(metrics.get("train_loss", float("nan"))))), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", default="10000,100000", help="comma-separated fake-set sizes M")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--child", nargs=3, metavar=("EXECUTOR", "M", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]), args.steps, args.cpus)
        return 0

    ms = [int(v) for v in args.m.split(",")]
    root = Path(tempfile.mkdtemp(prefix="rayflow-student-bench-"))
    rows = []
    try:
        for m in ms:
            (root / f"m{m}").mkdir()
            write_fakes(root / f"m{m}", m)
        print(f"resnet8 student, {args.steps} steps, batch 64 (48 fakes), 1,000 real Fashion-MNIST images + M fakes "
              f"28x28; {args.cpus} CPUs", flush=True)
        for m in ms:
            for ex in args.executors.split(","):
                print(f"-- {ex}, M = {m}", flush=True)
                cmd = [sys.executable, __file__, "--child", ex, str(m), str(root), "--steps", str(args.steps),
                       "--cpus", str(args.cpus)]
                rows.append(dict(run_child(cmd, f"{ex} M={m}"), executor=ex, m=m))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    growth_table(rows, "m", "stage_pss", [
        ("wall s", 7, lambda r: f"{r['wall_s']:.1f}"), ("peak RSS MB", 11, lambda r: f"{r['peak_rss'] / MB:.0f}"),
        ("peak PSS MB", 11, lambda r: f"{r['peak_pss'] / MB:.0f}"),
        ("stage PSS MB", 12, lambda r: f"{r['stage_pss'] / MB:.0f}")])
    print("(stage PSS: the driver + Ray Train worker + Ray Data read/map processes, without Ray's fixed "
          "processes; the local executor holds the student's whole view in memory, Ray streams it)")
    record("student_memory", rows, steps=args.steps, cpus=args.cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seconds per Tune trial vs the same student trained by a plain call, in one run.

Rows: the plain-torch loop in this process (the baseline); one Ray Train fit (how the pipeline
trains a student); Tune trials whose body is that plain loop (Tune's own cost per trial); Tune
trials whose body is the Ray Train fit (how `rayflow tune` runs a trial: a TorchTrainer nested in
a function trainable). Overhead = row − plain, per trial.

    python benchmarks/tune_overhead.py [--steps 300] [--trials 3] [--model mlp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import record

from rayflow.config import DataConfig, ModelConfig, RuntimeConfig, ScalingConfig, TrainConfig
from rayflow.data import load_splits
from rayflow.executors import get_executor
from rayflow.train.batched import train_jobs
from rayflow.train.job import SupervisedJob, run_job


class Repeat:
    """The smallest ask/tell searcher: the same config `n` times (every trial does equal work)."""

    def __init__(self, n: int):
        self.n, self.asked = n, 0

    def ask(self) -> dict | None:
        if self.asked >= self.n:
            return None
        self.asked += 1
        return {"trial": self.asked}

    def tell(self, config: dict, error: float | None) -> None:
        pass

    def state(self) -> dict:
        return {"asked": self.asked}

    def load(self, state: dict) -> None:
        self.asked = state["asked"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--model", default="mlp")
    args = ap.parse_args()

    splits = load_splits(DataConfig(name="digits", image_size=16))
    job = SupervisedJob(model=ModelConfig(name=args.model), train=splits.train, test=splits.test,
                        train_cfg=TrainConfig(steps=args.steps, augment=[], seed=0), log_every=10**9)
    scaling = ScalingConfig(num_workers=1, cpus_per_worker=1)
    executor = get_executor(RuntimeConfig(num_cpus=os.cpu_count() or 2))
    storage = (tempfile.mkdtemp(prefix="tune-bench-"), None)
    print(f"{args.model} student, {args.steps} steps on {len(splits.train)} digits images, {args.trials} trials, "
          f"{os.cpu_count()} CPUs", flush=True)

    def plain(_config=None, _report=None) -> dict:
        m = run_job(job, job.build())
        return {"test_acc": m["test_acc"]}

    def ray_fit(config=None, _report=None) -> dict:
        name = f"fit-{time.perf_counter_ns()}"
        (_, m), = train_jobs(executor, [job], names=[name], run_name=name, scaling=scaling, storage=storage)
        return {"test_acc": m["test_acc"]}

    rows = []
    t = time.perf_counter()
    plain()
    base = time.perf_counter() - t
    rows.append(("plain torch loop (baseline)", base))
    ray_fit()  # Ray start-up and the first worker-group launch are not per-trial costs
    t = time.perf_counter()
    ray_fit()
    rows.append(("Ray Train fit (the pipeline's student)", time.perf_counter() - t))
    for label, body in (("Tune trial, plain loop inside", plain), ("Tune trial, Ray Train fit inside", ray_fit)):
        t = time.perf_counter()
        done = executor.tune(body, searcher=Repeat(args.trials), trials=args.trials, metric="test_acc", mode="max",
                             to_error=lambda a: 100 - a, storage=storage, name=f"bench-{len(rows)}", asha=None,
                             max_concurrent=1, trial_cpus=0.01)
        assert len(done) == args.trials, done
        rows.append((label, (time.perf_counter() - t) / args.trials))

    print("\n| run | s per trial | overhead vs plain |\n|---|---:|---:|")
    for label, s in rows:
        print(f"| {label} | {s:.2f} | {s - base:+.2f} s ({s / base:.1f}×) |")
    record("tune", [dict(path=label, s_per_trial=s, overhead_s=s - base, vs_plain=s / base) for label, s in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

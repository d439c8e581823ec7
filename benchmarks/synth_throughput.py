"""Samples/s of the whole synthetic-data stage: Ray Data pipeline vs the in-process local executor.

Nets of the real pipeline's size, random-init (throughput does not depend on training): a
CondGenerator (base 64) on 28x28x1 with 10 classes, a resnet8 teacher, a resnet8 feature net and
a RatioMLP [512, 256, 128]; cDR-RS subsampling + filtering (rho 0.9) + relabelling on, burn-ins
of 1000 / 500 per class. Every (executor, M) case runs in a fresh child process, so one case's
memory does not leak into the next. The Ray child starts Ray before it times the stage, as a
pipeline job does once for all its stages (the stage's own actor start-up stays in its wall);
the Ray start-up is printed apart, and the "incl. start" column charges it to the stage as well.

Memory: the parent samples the child's whole process tree (the driver and, for Ray, gcs_server,
raylet and every Ray worker it spawned) every 0.25 s and reports the peak of the summed RSS and of
the summed PSS (PSS splits shared pages such as torch's libraries between processes, so it is
the honest "RAM used" figure; RSS counts them once per process). The last column, "stage PSS",
is the driver plus Ray Data's synth actors: the stage's own memory, without Ray's fixed processes
(GCS, raylet, agents, idle workers, Data coordinators), which are there whatever the workload.

    python benchmarks/synth_throughput.py [--m 10000,100000] [--quick] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import record, run_child

NUM_CLASSES, SIZE = 10, 28


def make_nets(root: Path) -> None:
    import torch

    from rayflow.config import ModelConfig
    from rayflow.dre import RatioMLP
    from rayflow.models import build_model
    from rayflow.models.io import save_model
    from rayflow.synth import GeneratorSpec

    torch.manual_seed(0)
    for name in ("teacher", "features"):
        net = build_model("resnet8", in_channels=1, image_size=SIZE, num_outputs=NUM_CLASSES)
        save_model(root / name, net.state_dict(), ModelConfig(name="resnet8"), 1, SIZE, NUM_CLASSES)
    ratio = RatioMLP(net.feature_dim, NUM_CLASSES, hidden=[512, 256, 128])
    torch.nn.init.constant_(ratio.body[-2].bias, 0.5)  # random init: keep ratios positive
    torch.save({"G": GeneratorSpec(NUM_CLASSES, base_channels=64)().state_dict(), "ratio": ratio.state_dict()},
               root / "states.pt")


def _worker_pid() -> int:
    return os.getpid()


def child(executor: str, m_total: int, root: Path, cpus: int, threads_per_actor: int, address: str = "local") -> None:
    """One case; `address`: a running cluster to use instead of a fresh embedded Ray."""
    import torch

    from rayflow.config import RuntimeConfig, SynthConfig
    from rayflow.synth import GeneratorSpec, SynthInputs, SynthOptions, run_synth

    torch.set_num_threads(cpus)
    states = torch.load(root / "states.pt", weights_only=True)
    inputs = SynthInputs(num_classes=NUM_CLASSES, generator=GeneratorSpec(NUM_CLASSES, base_channels=64),
                         generator_state=states["G"], teacher_dir=str(root / "teacher"),
                         feature_dir=str(root / "features"), ratio_state=states["ratio"], rho=0.9,
                         dre_burnin=1000, filter_burnin=500)
    # "ray": the default fused pool (one actor per shard in flight, `cpus` of them at 1 CPU each
    # would leave nothing for the driver, so 0.5 CPU each); "ray-staged": a pool per step
    fused = executor == "ray"
    cfg = SynthConfig(m_per_class=m_total // NUM_CLASSES, batch_size=500, shard_size=2000, seed=0)
    runtime = RuntimeConfig(address=address, num_cpus=cpus, object_store_memory_mb=1024,
                            executor="local" if executor == "local" else "ray")
    opts = SynthOptions(gen_actors=cpus if fused else 1, fused=fused, threads_per_actor=threads_per_actor,
                        local_threads=cpus, progress_every_s=30)
    out = root / f"out-{executor}-{m_total}"
    ray_start_s = 0.0
    if executor != "local":  # a pipeline job starts Ray once, before its first stage: timed apart
        import time

        from rayflow.runtime import init_ray

        t0 = time.perf_counter()
        init_ray(runtime)
        import ray

        # until its worker processes are up too: later stages of a job find them running
        ray.get([ray.remote(num_cpus=0.5)(_worker_pid).remote() for _ in range(cpus)])
        ray_start_s = time.perf_counter() - t0
    from rayflow.executors import get_executor

    m = run_synth(inputs, cfg, out, get_executor(runtime), options=opts)
    shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps(dict({k: m[k] for k in ("wall_s", "burnin_s", "draws_per_s", "subsample_accept",
                                                         "filter_keep", "rounds", "shards")},
                                      ray_start_s=ray_start_s)), flush=True)


def run_case(executor: str, m_total: int, root: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", executor, str(m_total), str(root), "--cpus", str(args.cpus),
           "--threads-per-actor", str(args.threads_per_actor)]
    return dict(run_child(cmd, f"{executor} M={m_total}", echo=("[synth]", "Error", "Traceback")),
                executor=executor, m=m_total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", default="10000,100000", help="comma-separated total accepted samples M")
    ap.add_argument("--quick", action="store_true", help="M = 2000 only")
    ap.add_argument("--executors", default="local,ray,ray-staged",
                    help="local, ray (fused actor pool, the default), ray-staged (a pool per step)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--threads-per-actor", type=int, default=1)
    ap.add_argument("--child", nargs=3, metavar=("EXECUTOR", "M", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]), args.cpus, args.threads_per_actor)
        return 0

    ms = [2000] if args.quick else [int(v) for v in args.m.split(",")]
    root = Path(tempfile.mkdtemp(prefix="rayflow-synth-bench-"))
    try:
        make_nets(root)
        import torch

        print(f"synth stage, {NUM_CLASSES} classes 28x28x1, CondGenerator base 64 + resnet8 feature net + "
              f"RatioMLP [512,256,128] + resnet8 teacher, batch 500, shard 2000; {args.cpus} CPUs, "
              f"torch {torch.__version__}; ray: 1 fused pool x {args.cpus} actors, ray-staged: 3 pools x 1 actor; "
              f"0.5 CPU x {args.threads_per_actor} thread(s) per actor; local: 1 process x {args.cpus} threads",
              flush=True)
        rows = []
        for m_total in ms:
            for ex in args.executors.split(","):
                print(f"-- {ex}, M = {m_total}", flush=True)
                rows.append(run_case(ex, m_total, root, args))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    local = {r["m"]: r for r in rows if r["executor"] == "local"}
    print(f"\n{'executor':<10} {'M':>7} {'Ray start s':>11} {'wall s':>7} {'burn-in s':>9} {'samples/s':>9} "
          f"{'draws/s':>8} {'Ray/local':>9} {'incl. start':>11} {'peak RSS MB':>11} {'peak PSS MB':>11} "
          f"{'driver RSS MB':>13} {'stage PSS MB':>12}")
    for r in rows:
        sps = r["m"] / r["wall_s"]
        base = local.get(r["m"])
        ratio = incl = ""
        if base and r["executor"] != "local":
            ratio = f"{base['wall_s'] / r['wall_s']:.2f}x"
            incl = f"{base['wall_s'] / (r['wall_s'] + r['ray_start_s']):.2f}x"
        print(f"{r['executor']:<10} {r['m']:>7} {r['ray_start_s']:>11.1f} {r['wall_s']:>7.1f} {r['burnin_s']:>9.1f} "
              f"{sps:>9.0f} {r['draws_per_s']:>8.0f} {ratio:>9} {incl:>11} {r['peak_rss'] / 2**20:>11.0f} "
              f"{r['peak_pss'] / 2**20:>11.0f} {r['driver_rss'] / 2**20:>13.0f} {r['stage_pss'] / 2**20:>12.0f}")
    acc = rows[0]
    print(f"(samples/s = M / wall, the whole stage incl. burn-in, with Ray already running as in a pipeline job; "
          f"'incl. start' adds ray.init to the Ray wall; acceptance: subsampling {acc['subsample_accept']:.2f}, "
          f"filter {acc['filter_keep']:.2f}; memory: peak RSS/PSS summed over the child's process tree incl. "
          "Ray's gcs/raylet/workers, and the driver process alone, and the stage PSS: driver + Ray Data's synth "
          "actors, without Ray's fixed processes; sampled every 0.25 s)")
    record("synth", [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows], cpus=args.cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The synth stage on a `ray.cluster_utils` cluster of 2 and of 4 raylets on this one machine.

Every raylet here is a separate set of Ray processes (raylet, agents, workers) on the same cores:
going from 2 to 4 raylets adds Ray's per-node processes and spreads the synth actors over more
nodes, but adds no hardware. On a 2-core box this measures per-node overhead and contention, not
scaling; on a real cluster each raylet brings its own cores. The head has no CPU (the driver's
node, as on a cluster whose head only coordinates); each worker raylet advertises 2 CPUs and runs
2 synth actors. Baseline: the same stage with the local executor, in the same run.

    python benchmarks/cluster_scaling.py [--m 10000] [--raylets 2,4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import synth_throughput as synth
from common import record, run_child


def child(raylets: int, m: int, root: Path) -> None:
    import ray
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # do not touch /tmp/ray/ray_current_cluster: another Ray on this machine may own it
    ray._private.utils.write_ray_address = lambda *a, **k: None
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    c = Cluster(initialize_head=True, connect=False,
                head_node_args=dict(num_cpus=0, include_dashboard=False, dashboard_agent_listen_port=None))
    try:
        for _ in range(raylets - 1):
            c.add_node(num_cpus=2, dashboard_agent_listen_port=None)
        c.wait_for_nodes()
        synth.child("ray", m, root, cpus=2 * (raylets - 1), threads_per_actor=1, address=c.address)
    finally:
        ray.shutdown()  # the driver's connection first: Cluster refuses to remove the node it is on
        c.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=10_000)
    ap.add_argument("--raylets", default="2,4")
    ap.add_argument("--child", nargs=3, metavar=("RAYLETS", "M", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]), Path(args.child[2]))
        return 0
    root = Path(tempfile.mkdtemp(prefix="rayflow-cluster-bench-"))
    rows = []
    try:
        synth.make_nets(root)
        cpus = os.cpu_count() or 2
        print(f"synth stage, M = {args.m:,}, on ray.cluster_utils clusters (head 0 CPU + worker raylets of 2 CPUs "
              f"each) on {cpus} cores; baseline: the local executor", flush=True)
        base = run_child([sys.executable, synth.__file__, "--child", "local", str(args.m), str(root), "--cpus",
                          str(cpus)], "local")
        for n in (int(v) for v in args.raylets.split(",")):
            print(f"-- {n} raylets", flush=True)
            r = run_child([sys.executable, __file__, "--child", str(n), str(args.m), str(root)], f"{n} raylets")
            rows.append(dict(path=f"synth on {n} raylets", raylets=n, wall_s=r["wall_s"], base_wall_s=base["wall_s"],
                             peak_pss_mb=r["peak_pss"] / 2**20, base_pss_mb=base["peak_pss"] / 2**20))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'case':<22} {'wall s':>7} {'vs local':>9} {'tree PSS MB':>12}")
    print(f"{'local executor':<22} {rows[0]['base_wall_s']:>7.1f} {1:>8.2f}x {rows[0]['base_pss_mb']:>12.0f}")
    for r in rows:
        print(f"{r['path']:<22} {r['wall_s']:>7.1f} {r['wall_s'] / r['base_wall_s']:>8.2f}x {r['peak_pss_mb']:>12.0f}")
    print("(one machine: more raylets add Ray's per-node processes and contention, not cores)")
    record("cluster", rows, m=args.m)
    return 0


if __name__ == "__main__":
    sys.exit(main())

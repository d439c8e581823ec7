"""Chair renders/s: a plain Python loop vs the executor seam (in process, and Ray Data actors).

The same (model, yaw) views are rendered three ways in one run: a `for` loop calling
`render.render` (the baseline), `LocalExecutor.map_batches` with the `RenderChairs` step (the
`executor: local` path), and `RayExecutor.map_batches` (Ray Data actor pools, the default path of
`data.name: chairs`). Mesh parsing is inside every wall time (each actor parses the models it
draws). Ray start-up is timed apart, as a pipeline starts Ray once for all its stages. All three
must give identical bytes. Models: the first --models chairs of Debian's sweethome3d-furniture
CC0 archive, or a small built-in chair mesh when the package is missing.

    python benchmarks/render_throughput.py [--models 4] [--yaws 30] [--size 64] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from common import record

CC0 = Path("/usr/share/sweethome3d/furniture/BlendSwap-CC-0.sh3f")


def builtin_chair(root: Path) -> Path:
    """A chair of boxes (seat, back, four legs), each face split into a 6x6 grid of quads (~1.7k triangles)."""
    lines, nv = [], 0

    def box(x0, x1, y0, y1, z0, z1, n=6):
        nonlocal nv
        corners = np.array([[x0, y0, z0], [x1, y1, z1]], float)
        for axis in range(3):
            for side in range(2):
                u, w = [a for a in range(3) if a != axis]
                for i in range(n):
                    for j in range(n):
                        quad = []
                        for di, dj in ((0, 0), (1, 0), (1, 1), (0, 1)):
                            p = np.empty(3)
                            p[axis] = corners[side, axis]
                            p[u] = corners[0, u] + (corners[1, u] - corners[0, u]) * (i + di) / n
                            p[w] = corners[0, w] + (corners[1, w] - corners[0, w]) * (j + dj) / n
                            lines.append("v %.4f %.4f %.4f" % tuple(p))
                            quad.append(nv := nv + 1)
                        lines.append("f " + " ".join(map(str, quad)))

    box(-1, 1, 0, 0.15, -1, 1)
    box(-1, 1, 0.15, 2.2, -1, -0.85)
    for x in (-1, 0.85):
        for z in (-1, 0.85):
            box(x, x + 0.15, -1.6, 0, z, z + 0.15)
    p = root / "builtin_chair.obj"
    p.write_text("\n".join(lines) + "\n")
    return p


def models(n: int, root: Path, builtin: bool = False) -> tuple[list, str]:
    from rayflow.data.mesh import MeshRef, read_catalog

    if CC0.is_file() and not builtin:
        refs = read_catalog(CC0)[:n]
        names = ", ".join(r.name.split("/")[-1] for r in refs)
        return refs, f"{len(refs)} CC0 chairs from sweethome3d-furniture ({names})"
    p = builtin_chair(root)
    return [MeshRef(name=f"builtin{i}", path=str(p)) for i in range(n)], \
        f"{n} x the built-in chair mesh ({'--builtin' if builtin else 'sweethome3d-furniture is not installed'})"


def plain_loop(refs, yaws, args) -> np.ndarray:
    from rayflow.data.mesh import load_mesh
    from rayflow.data.render import render

    out = []
    for r in refs:
        v, f = load_mesh(r)
        out += [render(v, f, y, args.elevation, args.size, args.supersample) for y in yaws]
    return np.stack(out)


def through(executor, refs, yaws, args) -> np.ndarray:
    from rayflow.data.render import RenderChairs, work_items
    from rayflow.executors import PoolSpec, StepSpec

    kw = {"meshes": [asdict(r) for r in refs], "yaws": list(yaws), "size": args.size,
          "supersample": args.supersample, "elevation": args.elevation}
    pool = PoolSpec(max_actors=args.actors or args.cpus, cpus_per_actor=0.5, threads_per_actor=1)
    out = np.zeros((len(refs) * len(yaws), args.size, args.size), np.uint8)
    for row in executor.map_batches(work_items(len(refs), len(yaws), args.per_item),
                                    lambda device, threads: [StepSpec(RenderChairs, dict(kw, threads=threads))], pool):
        out[int(row["model"]) * len(yaws) + int(row["yaw"])] = row["image"]
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--yaws", type=int, default=30, help="yaws per model, evenly over [0, 90)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--supersample", type=int, default=4)
    ap.add_argument("--elevation", type=float, default=20.0)
    ap.add_argument("--per-item", type=int, default=6, help="yaws per Ray Data work item")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--actors", type=int, default=0, help="render actors (default: --cpus)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--builtin", action="store_true", help="the built-in mesh even if the package is there")
    args = ap.parse_args()

    from rayflow.config import RuntimeConfig
    from rayflow.executors import LocalExecutor, get_executor

    yaws = np.round(np.arange(args.yaws) * 90.0 / args.yaws, 9).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        refs, what = models(args.models, Path(tmp), args.builtin)
        n = len(refs) * len(yaws)
        print(f"chair renders: {what}; {len(yaws)} yaws each = {n} images of {args.size}x{args.size} "
              f"({args.supersample}x supersampling); {args.cpus} CPUs; Ray Data: up to "
              f"{args.actors or args.cpus} actors x 0.5 CPU, {args.per_item} yaws per item\n", flush=True)
        rows = []
        base, t_loop = timed(lambda: plain_loop(refs, yaws, args))
        rows.append(("plain Python loop", t_loop, ""))
        local, t_local = timed(lambda: through(LocalExecutor(), refs, yaws, args))
        same = "yes" if np.array_equal(local, base) else "NO"
        rows.append(("executor: local (same step, in process)", t_local, same))
        ray_start = None
        if not args.no_ray:
            from rayflow.runtime import init_ray

            rt = RuntimeConfig(address="local", num_cpus=args.cpus, object_store_memory_mb=512)
            _, ray_start = timed(lambda: init_ray(rt))
            ray_out, t_ray = timed(lambda: through(get_executor(rt), refs, yaws, args))
            same = "yes" if np.array_equal(ray_out, base) else "NO"
            rows.append(("executor: ray (Ray Data actor pool)", t_ray, same))
            # a second job on the warm cluster: what later loads of a pipeline see
            _, t_ray2 = timed(lambda: through(get_executor(rt), refs, yaws, args))
            rows.append(("executor: ray, 2nd job (workers warm)", t_ray2, ""))

    print("| path | images | wall s | images/s | vs loop | same bytes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, wall, same in rows:
        print(f"| {name} | {n} | {wall:.2f} | {n / wall:.1f} | {t_loop / wall:.2f}x | {same} |")
    if ray_start is not None:
        print(f"\n(Ray start-up {ray_start:.1f} s, not in the table; wall times include mesh parsing.)")
    record("render", [dict(path=name, images=n, wall_s=wall, images_per_s=n / wall, vs_loop=t_loop / wall, same=same)
                      for name, wall, same in rows], ray_start_s=ray_start)
    return 0 if all(same != "NO" for *_, same in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

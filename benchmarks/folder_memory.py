"""Peak memory of reading an image folder through to a student's first batch as the folder grows
(N = 10k -> 100k 224-px JPEGs), in process and through Ray Data.

The folder is decoded and fitted to `--size` into the memory-mapped cache (rayflow/data/folder.py,
a fresh $RAYFLOW_CACHE per case, so every case decodes), split (the 20 % test split held out), and a
student's first batch is drawn from the training rows. Each case runs in a fresh child process; the
parent samples the child's whole process tree (driver, Ray's processes, Ray Data actors) every 0.25 s
and reports its peak PSS: the figure that must not grow with N.

    python benchmarks/folder_memory.py [--n 10000,100000] [--executors local,ray] [--size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import MB, growth_table, record, run_child

CLASSES, SIDE = 10, 224


def _write(args: tuple[Path, int, int]) -> None:
    """Smooth pictures (an 8x8 colour field, upscaled): JPEGs of a few kB, like photos, not noise."""
    from PIL import Image

    root, start, stop = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        d = root / f"class{i % CLASSES}"
        d.mkdir(exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((SIDE, SIDE), Image.BILINEAR).save(d / f"{i:06d}.jpg", quality=85)


def make_folder(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(_write, [(root, s, min(n, s + 2000)) for s in range(0, n, 2000)]))


def child(executor: str, folder: Path, size: int, cpus: int) -> None:
    import torch

    from rayflow.config import DataConfig, RuntimeConfig
    from rayflow.data import load_splits
    from rayflow.executors import get_executor
    from rayflow.train.sources import ArraySource

    torch.set_num_threads(cpus)
    runtime = RuntimeConfig(address="local", num_cpus=cpus, object_store_memory_mb=1024, executor=executor)
    t0 = time.perf_counter()
    splits = load_splits(DataConfig(name="folder", path=str(folder), image_size=size), get_executor(runtime))
    batch = ArraySource(splits.train.images, splits.train.labels, 64).next_batch()
    print("RESULT " + json.dumps(dict(wall_s=time.perf_counter() - t0, n_train=len(splits.train),
                                      mapped=isinstance(splits.train.images, np.memmap),
                                      batch=list(batch["x"].shape))), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="10000,100000", help="comma-separated folder sizes")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--size", type=int, default=32, help="data.image_size the pictures are fitted to")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--child", nargs=2, metavar=("EXECUTOR", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.size, args.cpus)
        return 0

    ns = [int(v) for v in args.n.split(",")]
    root = Path(tempfile.mkdtemp(prefix="rayflow-folder-bench-"))
    rows = []
    try:
        for n in ns:
            t0 = time.perf_counter()
            make_folder(root / f"n{n}", n)
            print(f"folder of {n:,} {SIDE}-px JPEGs written in {time.perf_counter() - t0:.0f} s", flush=True)
        for n in ns:
            for ex in args.executors.split(","):
                print(f"-- {ex}, N = {n:,}", flush=True)
                cache = root / f"cache-{ex}-{n}"  # a fresh cache: the case decodes the whole folder
                cmd = ["env", f"RAYFLOW_CACHE={cache}", sys.executable, __file__, "--child", ex, str(root / f"n{n}"),
                       "--size", str(args.size), "--cpus", str(args.cpus)]
                rows.append(dict(run_child(cmd, f"{ex} N={n}"), executor=ex, n=n))
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    growth_table(rows, "n", "peak_held", [
        ("wall s", 7, lambda r: f"{r['wall_s']:.1f}"), ("pictures/s", 10, lambda r: f"{r['n'] / r['wall_s']:.0f}"),
        ("peak PSS MB", 11, lambda r: f"{r['peak_pss'] / MB:.0f}"),
        ("held MB", 8, lambda r: f"{r['peak_held'] / MB:.0f}"),
        ("driver RSS MB", 13, lambda r: f"{r['driver_rss'] / MB:.0f}")])
    print("(the whole process tree, driver and every Ray process; peak PSS counts the pages of the memory-mapped "
          "cache a process touched, clean page cache the kernel reclaims under pressure; held: anonymous + shared "
          f"memory, what the run keeps, and the growth judged; pictures fitted to {args.size} px)")
    record("folder", rows, size=args.size, cpus=args.cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())

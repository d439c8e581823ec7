"""`rayflow predict` images/s: the in-process loop (the local executor) vs Ray Data batch inference
(embedded Ray, an actor per CPU), on a folder of N 224-px JPEGs, both writing Parquet shards.

Both run in one process, minutes apart, on the same folder and the same tiny student (cnn_small at
32 px, RGB: decoding and fitting the JPEGs is most of the work, as for a small student in practice).
The Ray figure is end to end, as `rayflow predict --ray` runs (Ray's start-up included; it is also
shown apart). Both outputs must hold the same rows.

    python benchmarks/predict_throughput.py [--n 100000] [--cpus 2] [--size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from common import record
from folder_memory import make_folder


def make_student(root: Path, size: int, classes: list[str]) -> Path:
    """An untrained (seeded) cnn_small exported as a student folder, as tests/test_predict.py builds one."""
    import torch

    from rayflow.config import ModelConfig
    from rayflow.labels import space_of
    from rayflow.models import build_model
    from rayflow.models.io import read_arch, save_model
    from rayflow.student.export import build_folder, contract_of

    torch.manual_seed(0)
    net = build_model("cnn_small", in_channels=3, image_size=size, num_outputs=len(classes))
    src = root / "artifact"
    src.mkdir(parents=True)
    save_model(src, net.state_dict(), ModelConfig(name="cnn_small"), 3, size, len(classes))
    splits = SimpleNamespace(num_classes=len(classes), train=SimpleNamespace(class_names=classes))
    contract = contract_of(read_arch(src), splits, space_of(len(classes), None), {"artifact": str(src)}, {"seed": 0})
    out = root / "student"
    out.mkdir()
    build_folder(out, src, contract, lambda module, folder: "benchmark student\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="JPEGs in the folder")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="Ray's CPUs and inference actors")
    ap.add_argument("--size", type=int, default=32, help="the student's image size")
    args = ap.parse_args()

    import pandas as pd

    from rayflow.config import RuntimeConfig
    from rayflow.executors import LocalExecutor, get_executor
    from rayflow.runtime import init_ray
    from rayflow.student.predict import predict_shards
    from rayflow.student.shards import read_shards

    root = Path(tempfile.mkdtemp(prefix="rayflow-predict-bench-"))
    try:
        t0 = time.perf_counter()
        make_folder(root / "images", args.n)
        print(f"folder of {args.n:,} 224-px JPEGs written in {time.perf_counter() - t0:.0f} s", flush=True)
        student = make_student(root, args.size, [f"class{i}" for i in range(10)])
        rows, outs = [], {}
        rt = RuntimeConfig(address="local", num_cpus=args.cpus, object_store_memory_mb=1024, executor="ray")
        for path, executor in (("in-process loop (executor: local)", LocalExecutor()),
                               ("Ray Data actor pool (executor: ray)", None)):
            outs[path] = root / f"out-{len(outs)}"
            t0 = time.perf_counter()
            start_s = 0.0
            if executor is None:
                init_ray(rt)
                start_s = time.perf_counter() - t0
                executor = get_executor(rt)
            done = predict_shards(student, [str(root / "images")], str(outs[path]), executor=executor,
                                  actors=args.cpus)
            wall = time.perf_counter() - t0
            assert done["rows"] == args.n
            rows.append(dict(path=path, n=args.n, wall_s=wall, start_s=start_s, images_per_s=args.n / wall,
                             after_start_per_s=args.n / (wall - start_s), shards=len(done["parts"])))
        import ray

        ray.shutdown()
        a, b = (read_shards(str(p)) for p in outs.values())
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6)  # the same rows either way
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = rows[0]["images_per_s"]
    print(f"\n{'path':<38} {'N':>7} {'wall s':>7} {'start s':>7} {'images/s':>9} {'after start':>11} {'ratio':>6}")
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
        print(f"{r['path']:<38} {r['n']:>7,} {r['wall_s']:>7.1f} {r['start_s']:>7.1f} {r['images_per_s']:>9.0f} "
              f"{r['after_start_per_s']:>11.0f} {r['ratio']:>5.2f}x")
    print(f"(student cnn_small at {args.size} px, RGB; {args.cpus} CPUs: Ray actors = {args.cpus}, the loop's "
          f"torch threads = {args.cpus}; ratio: images/s vs the loop, Ray's start-up included)")
    record("predict", rows, cpus=args.cpus, size=args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

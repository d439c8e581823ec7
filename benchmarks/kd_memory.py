"""Peak RSS of KD students at the quality config's size: BLKD vs cGAN-KD vs cGAN-KD + CRD.

Each row trains one student for a few steps in a fresh process (peak RSS is a per-process high-water
mark) through `run_job`, the code both executors run, on synthetic data of the quality config's
shape: 1x28x28 images, 10 classes, 100 real images per class, m_per_class=1500 fakes per class with
stored teacher logits, batch 64, 25 % reals per batch, teacher resnet_wide, student mlp
(rayflow/configs/quality.yaml). Weights are untrained: memory does not depend on them.

- BLKD: the student on the reals, Hinton term, teacher online (the reals' logits precomputed: no
  augmentation), as the pipeline's BLKD student;
- cGAN-KD: reals + fakes with stored logits, no teacher in the worker;
- cGAN-KD + CRD: as cGAN-KD plus CRD (RepDistiller defaults: nce_k 16384, feat_dim 128), the
  teacher online on every row for its embedding, memory bank over real + fake.

    python benchmarks/kd_memory.py [--steps 40] [--threads 2] [--methods crd fitnet ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import record


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def one(variant: str, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    from rayflow.config import ModelConfig, TrainConfig
    from rayflow.data.imageset import ImageSet
    from rayflow.kd import CRDConfig, method_config
    from rayflow.models import build_model
    from rayflow.train.job import FakeData, SupervisedJob, run_job

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    n_real, n_fake, k = 1000, 15000, 10
    train = ImageSet(rng.integers(0, 256, (n_real, 1, 28, 28), dtype=np.uint8), np.arange(n_real) % k, k)
    teacher = build_model("resnet_wide", in_channels=1, image_size=28, num_outputs=k)
    base = _rss_mb()
    cfg = TrainConfig(steps=steps, batch_size=64, augment=[], optim={"lr": 0.05})
    common = dict(model=ModelConfig(name="mlp"), train_cfg=cfg, train=train, log_every=10**9)
    if variant == "blkd":
        job = SupervisedJob(**common, teacher=ModelConfig(name="resnet_wide"), teacher_state=teacher.state_dict(),
                            kd_alpha=0.9)
    else:
        fake = FakeData(rng.integers(0, 256, (n_fake, 1, 28, 28), dtype=np.uint8), np.arange(n_fake) % k,
                        rng.normal(size=(n_fake, k)).astype(np.float32), real_fraction=0.25)
        methods = [] if variant == "cgankd" else [CRDConfig() if variant == "crd" else method_config(variant)]
        extra = dict(teacher=ModelConfig(name="resnet_wide"), teacher_state=teacher.state_dict()) if methods else {}
        job = SupervisedJob(**common, kd_alpha=0.9, fake=fake, kd_methods=methods,
                            real_logits=rng.normal(size=(n_real, k)).astype(np.float32), **extra)
    del teacher
    t0 = time.perf_counter()
    m = run_job(job, job.build())
    return {"variant": variant, "peak_rss_mb": _rss_mb(), "before_training_mb": base,
            "s_per_step": (time.perf_counter() - t0) / steps, "train_loss": m.get("train_loss")}


LABELS = {"blkd": "BLKD (online teacher, reals)", "cgankd": "cGAN-KD (stored logits)",
          "crd": "cGAN-KD + CRD (online teacher)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=[], help="more cGAN-KD + method rows (fitnet, at, ...)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.steps, args.threads)), flush=True)
        return 0
    rows = []
    for v in ["blkd", "cgankd", "crd", *args.methods]:
        out = subprocess.run([sys.executable, __file__, "--one", v, "--steps", str(args.steps), "--threads",
                              str(args.threads)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = rows[0]["peak_rss_mb"]
    print(f"{'student':<34} {'peak RSS MB':>12} {'vs BLKD':>8} {'before training MB':>19} {'s/step':>7}")
    for r in rows:
        print(f"{LABELS.get(r['variant'], 'cGAN-KD + ' + r['variant']):<34} {r['peak_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] / ref:>7.2f}x {r['before_training_mb']:>19.0f} {r['s_per_step']:>7.3f}")
    record("kd_memory", [dict(r, path=LABELS.get(r["variant"], "cGAN-KD + " + r["variant"]),
                              vs_blkd=r["peak_rss_mb"] / ref) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())

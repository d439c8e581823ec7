"""What feature-based KD methods cost on fakes: the teacher online in the training worker vs stored.

Fakes carry the teacher's logits from the synth stage but not its features, which FitNet, AT, SP,
VID, RKD, PKT and CRD need. Two ways: run the teacher online on every batch (what rayflow does),
or store the features in the synth pool. This measures, at a config's size (default: tiny,
rayflow/configs/tiny.yaml: digits 16x16, teacher resnet8, MLP student, batch 64, 75 % reals):

- the cGAN-KD student's step with stored logits only (today's cGAN-KD), and with a feature method
  (teacher online on every row) — via `run_job`, the code both executors run;
- the teacher's forward alone on the batch's fake rows and on the whole batch (eval, no grad);
- the bytes per fake sample that storing the teacher's features would add to the pool (every
  feature tensor: what an arbitrary method/layer choice may need; the embedding alone: CRD/RKD/PKT).

    python benchmarks/kd_online_teacher.py [--config tiny] [--method pkt] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--method", default="pkt", help="a feature method for the online-teacher row")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    from rayflow.cli import resolve_config
    from rayflow.config import load_config
    from rayflow.data import load_splits
    from rayflow.kd import method_config, probe_features
    from rayflow.models import build_model
    from rayflow.train.job import FakeData, SupervisedJob, run_job

    torch.set_num_threads(args.threads)
    cfg = load_config(resolve_config(args.config))
    splits = load_splits(cfg.data)
    c, h, _ = splits.shape
    k = splits.num_classes
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher.model.name, in_channels=c, image_size=h, num_outputs=k,
                          **cfg.teacher.model.kwargs).eval()
    rng = np.random.default_rng(0)
    n_fake = cfg.synth.m_per_class * k
    idx = rng.integers(0, len(splits.train), n_fake)
    fake = FakeData(splits.train.images[idx], splits.train.labels[idx],
                    rng.normal(size=(n_fake, k)).astype(np.float32), real_fraction=cfg.fake.real_fraction)
    tc = cfg.student.train.model_copy(update={"steps": args.steps})
    bs, n_real = tc.batch_size, max(1, round(tc.batch_size * cfg.fake.real_fraction))

    def job(methods):
        extra = {"teacher": cfg.teacher.model, "teacher_state": teacher.state_dict()} if methods else {}
        return SupervisedJob(model=cfg.student.model, train_cfg=tc, train=splits.train, kd_alpha=cfg.fake.kd_weight,
                             temperature=cfg.fake.temperature, fake=fake, kd_methods=methods, log_every=10**9,
                             real_logits=rng.normal(size=(len(splits.train), k)).astype(np.float32), **extra)

    def per_step(methods) -> float:
        times = []
        for _ in range(args.repeats):
            j = job(methods)
            m = j.build()
            t0 = time.perf_counter()
            run_job(j, m)
            times.append((time.perf_counter() - t0) / args.steps)
        return statistics.median(times)

    @torch.no_grad()
    def forward(n: int) -> float:
        x = torch.randn(n, c, h, h)
        for _ in range(5):
            teacher(x, return_features=True)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            teacher(x, return_features=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    plain = per_step([])
    online = per_step([method_config(args.method)])
    f_fake, f_all = forward(bs - n_real), forward(bs)
    specs = probe_features(teacher, (c, h, h))
    all_bytes = 4 * sum(s.numel for s in specs)
    emb_bytes = 4 * specs[-1].numel
    img_bytes = c * h * h
    print(f"config {args.config}: teacher {cfg.teacher.model.name}, student {cfg.student.model.name}, {c}x{h}x{h}, "
          f"batch {bs} ({bs - n_real} fakes), {args.threads} thread(s), median of {args.repeats} x {args.steps} steps")
    print(f"{'cGAN-KD step, stored logits only':<52} {1000 * plain:8.2f} ms")
    print(f"{'cGAN-KD + ' + args.method + ' step, teacher online on every row':<52} {1000 * online:8.2f} ms "
          f"(+{1000 * (online - plain):.2f} ms, {online / plain:.2f}x)")
    print(f"{'teacher forward on the fake rows (%d)' % (bs - n_real):<52} {1000 * f_fake:8.2f} ms")
    print(f"{'teacher forward on the whole batch (%d)' % bs:<52} {1000 * f_all:8.2f} ms")
    print(f"storing features instead: {all_bytes:,} B per fake for every feature tensor "
          f"({all_bytes / img_bytes:.0f}x the {img_bytes} B image), {emb_bytes:,} B for the embedding alone; "
          f"{n_fake:,} fakes: {all_bytes * n_fake / 2**20:.0f} MB / {emb_bytes * n_fake / 2**20:.1f} MB")
    record("kd_online", [dict(path="cGAN-KD step, stored logits", ms_per_step=1000 * plain, vs_plain=1.0),
                         dict(path=f"cGAN-KD + {args.method} step, teacher online", ms_per_step=1000 * online,
                              vs_plain=online / plain)], config=args.config, method=args.method)
    return 0


if __name__ == "__main__":
    sys.exit(main())

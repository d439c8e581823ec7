"""The plain-torch loop learns real data, distils, and resumes; no Ray involved."""

import numpy as np

from rayflow.config import ModelConfig, TrainConfig
from rayflow.train.job import FakeData, SupervisedJob, run_job
from rayflow.train.loop import evaluate, lr_at
from rayflow.train.sources import ArraySource


def _job(digits, steps=150, **kw):
    return SupervisedJob(model=ModelConfig(name="mlp"), train_cfg=TrainConfig(steps=steps, augment=[], seed=0),
                         train=digits.train, test=digits.test, **kw)


def test_plain_loop_learns_digits_well_above_chance(digits):
    job = _job(digits)
    model = job.build()
    before = evaluate(model, digits.test, job.task)["acc"]
    m = run_job(job, model)
    assert m["test_acc"] > 90.0 > before + 40  # chance is 10 %


def test_sharded_sources_split_each_epoch():
    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    y = np.arange(40)
    a = ArraySource(x, y, 8, rank=0, world_size=2, seed=1)
    b = ArraySource(x, y, 8, rank=1, world_size=2, seed=1)
    seen_a = {int(v) for _ in range(5) for v in a.next_batch()["y"]}
    seen_b = {int(v) for _ in range(5) for v in b.next_batch()["y"]}
    assert not seen_a & seen_b and len(seen_a | seen_b) == 40  # disjoint halves of one permutation


def test_kd_and_fake_mix_run(digits):
    teacher_job = _job(digits, steps=60)
    teacher = teacher_job.build()
    run_job(teacher_job, teacher)
    logits = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    fake = FakeData(digits.train.images[:64], digits.train.labels[:64], logits, real_fraction=0.5)
    job = _job(digits, steps=30, teacher=ModelConfig(name="mlp"), teacher_state=teacher.state_dict(),
               kd_alpha=0.5, fake=fake)
    m = run_job(job, job.build())
    assert np.isfinite(m["train_loss"]) and m["step"] == 30


def test_resume_from_state_skips_done_steps(digits):
    job = _job(digits, steps=40)
    model = job.build()
    states = []
    job.train_cfg.eval_every = 20
    run_job(job, model, reporter=lambda m, s: s and states.append((m["step"], s)))
    step, state = states[0]
    assert step == 20
    calls = []
    model2 = job.build()
    run_job(job, model2, start_state=state, reporter=lambda m, s: calls.append(m["step"]))
    assert min(calls) > 20 and max(calls) == 40  # only the remaining 20 steps ran


def test_schedules_start_and_end_sensibly():
    for s in ("onecycle", "cosine", "step", "constant"):
        assert lr_at(0, 100, 0.1, s) <= 0.1 + 1e-12
        assert lr_at(100, 100, 0.1, s) <= lr_at(0, 100, 0.1, s) + 1e-12
    assert abs(lr_at(30, 100, 0.1, "onecycle") - 0.1) < 1e-9  # peak at the end of warm-up

"""Ray Train path: same loop inside TorchTrainer, 1 and 2 workers, and the cached CLI re-run."""

import subprocess
import sys

import pytest

from rayflow.config import ModelConfig, RuntimeConfig, ScalingConfig, TrainConfig
from rayflow.executors import get_executor
from rayflow.train.batched import train_jobs
from rayflow.train.job import SupervisedJob

pytestmark = pytest.mark.slow


def _job(digits):
    return SupervisedJob(model=ModelConfig(name="mlp"), train_cfg=TrainConfig(steps=120, augment=[], seed=0),
                         train=digits.train, test=digits.test)


def run_ray_training(job, scaling, storage, name):
    """One job on the Ray executor: (weights, metrics)."""
    return train_jobs(get_executor(RuntimeConfig()), [job], names=[name], run_name=name, scaling=scaling,
                      storage=(str(storage), None))[0]


def test_ray_train_one_and_two_workers_learn_equally(ray_session, digits, tmp_path):
    _, one = run_ray_training(_job(digits), ScalingConfig(num_workers=1), tmp_path, "one")
    _, two = run_ray_training(_job(digits), ScalingConfig(num_workers=2), tmp_path, "two")
    assert one["test_acc"] > 90.0 and two["test_acc"] > 90.0  # chance is 10 %
    assert abs(one["test_acc"] - two["test_acc"]) < 3.0


def test_cli_rerun_reuses_artifacts(tmp_path):
    cmd = [sys.executable, "-m", "rayflow", "train-student", "--config", "tiny", "--executor", "local",
           "--set", f"output_dir={tmp_path}", "--set", "student.train.steps=30"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "reusing cached artifact" in second.stderr
    assert "[nokd] wrote " in first.stderr and "wrote " not in second.stderr  # trained once


def test_cli_bad_config_is_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rayflow", "run", "--config", "tiny", "--set", "filter.rho=2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("rayflow: error: invalid override --set filter.rho=2: ")  # the --set, not the file
    assert "filter.rho: must be in (0, 1]" in line


class _FakeShard:
    """Stands in for a Ray DataIterator: counts the passes (each would be a Ray Data execution)."""

    def __init__(self, n: int):
        import numpy as np

        self.rows = {"image": np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2), "label": np.arange(n),
                     "orig_label": np.arange(n), "teacher_logits": np.zeros((n, 3), np.float32)}
        self.passes = 0

    def iter_batches(self, batch_size, drop_last=True, **_):
        self.passes += 1
        n = len(self.rows["label"])
        for i in range(0, n - batch_size + 1, batch_size):
            yield {k: v[i:i + batch_size] for k, v in self.rows.items()}


@pytest.mark.parametrize("cache_mb,passes", [(512.0, 1), (0.0, 5)])
def test_shard_source_caches_a_small_shard(cache_mb, passes):
    from rayflow.train.sources import ShardSource

    shard = _FakeShard(20)
    src = ShardSource(shard, batch_size=5, use_logits=True, use_orig_label=False, seed=0, cache_mb=cache_mb)
    epochs = [sorted(int(v) for _ in range(4) for v in src.next_batch()["y"]) for _ in range(5)]
    assert shard.passes == passes  # cached: one Ray Data pass, then in-memory reshuffles
    assert all(e == list(range(20)) for e in epochs)  # every epoch still sees every row once


def test_shard_source_known_too_big_never_starts_a_cache(monkeypatch):
    """With the fake set's size known (its sample ids), a set over cache_mb streams from the first
    batch on: no rows are kept at all, so memory does not grow with M (not even for one epoch)."""
    import numpy as np

    from rayflow.train import sources

    shard = _FakeShard(20)  # 32 bytes per row: 640 B in all
    kept = []
    real_concat = np.concatenate
    monkeypatch.setattr(sources.np, "concatenate", lambda parts, *a, **k: kept.append(len(parts)) or
                        real_concat(parts, *a, **k))
    ids = np.arange(20)
    big = sources.ShardSource(shard, batch_size=5, use_logits=True, use_orig_label=False, seed=0,
                              cache_mb=500 / 2**20, sample_ids=ids)
    for _ in range(12):
        big.next_batch()
    assert shard.passes == 3 and not kept  # streamed every epoch, never gathered a cache
    small = sources.ShardSource(_FakeShard(20), batch_size=5, use_logits=True, use_orig_label=False, seed=0,
                                cache_mb=700 / 2**20, sample_ids=ids)
    for _ in range(12):
        small.next_batch()
    assert small.shard.passes == 1 and kept  # 640 B fit in 700: one pass, then reshuffles in memory


def test_batched_run_trains_each_item_like_its_own_run(ray_session, digits, tmp_path):
    jobs = [_job(digits), _job(digits)]
    jobs[1].train_cfg = jobs[1].train_cfg.model_copy(update={"seed": 1, "steps": 60})
    _, alone = run_ray_training(jobs[1], ScalingConfig(num_workers=1), tmp_path, "alone")
    out = train_jobs(get_executor(RuntimeConfig()), jobs, names=["item0", "item1"], run_name="batch",
                     scaling=ScalingConfig(num_workers=1), storage=(str(tmp_path), None))
    assert [m["step"] for _, m in out] == [120, 60]  # each item ran its own config, in order
    assert all(m["test_acc"] > 80.0 for _, m in out)  # chance is 10 %
    assert out[0][0].keys() == out[1][0].keys() and not all(
        (out[0][0][k] == out[1][0][k]).all() for k in out[0][0])  # two different models came back
    # same seed and steps as the run on its own: the earlier item does not leak into the later one
    assert abs(out[1][1]["test_acc"] - alone["test_acc"]) < 0.5


def test_ray_and_local_executors_train_bit_identical_weights(ray_session, digits, tmp_path):
    """Why supervised keys leave the executor out: both run the same loop with per-step seeds."""
    job = _job(digits)
    job.train_cfg = job.train_cfg.model_copy(update={"augment": ["crop", "flip"], "steps": 60})
    ray_w, _ = run_ray_training(job, ScalingConfig(num_workers=1), tmp_path, "ray")
    local_w, _ = train_jobs(get_executor(RuntimeConfig(executor="local")), [job], names=["local"],
                            run_name="local", scaling=ScalingConfig(num_workers=1),
                            storage=(str(tmp_path), None))[0]
    assert ray_w.keys() == local_w.keys() and all((ray_w[k] == local_w[k]).all() for k in ray_w)

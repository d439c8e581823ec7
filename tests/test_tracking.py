"""Metrics to TensorBoard event files (and MLflow when installed): the tiny run writes curves for
every stage under <output_dir>/tensorboard/<run>/; an object-store output gets them uploaded."""

from __future__ import annotations

import struct
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayflow.config import RuntimeConfig
from rayflow.tracking import NullTracker, TrackingSpec, log_scalars, spec_for, summary_writer_class

needs_writer = pytest.mark.skipif(summary_writer_class() is None,
                                  reason="neither tensorboard nor tensorboardX is installed")


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of every event file in `logdir`: tensorboard's EventAccumulator when
    installed, else the TFRecord framing read here and tensorboardX's Event protobuf."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        EventAccumulator = None
    out: dict[str, list[tuple[int, float]]] = {}
    if EventAccumulator is not None:
        acc = EventAccumulator(str(logdir))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
        return out
    from tensorboardX.proto.event_pb2 import Event

    for f in sorted(logdir.glob("events.out.tfevents.*")):
        data, pos = f.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = Event.FromString(data[pos + 12:pos + 12 + n])  # length, its crc, record, its crc
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_log_scalars_keeps_finite_numbers_only():
    got = []
    t = NullTracker()
    t.scalar = lambda tag, v, step: got.append((tag, v, step))
    log_scalars(t, {"step": 5, "loss": 0.5, "n": 3, "ok": True, "nan": float("nan"), "curve": "[]", "per": [1]}, 5,
                prefix="p/")
    assert got == [("p/loss", 0.5, 5), ("p/n", 3.0, 5)]


def test_spec_follows_the_runtime_switches(tmp_path):
    store = SimpleNamespace(is_local=True, root=str(tmp_path), location=str(tmp_path), fs=None)
    assert spec_for(RuntimeConfig(tensorboard=False), store) is None
    spec = spec_for(RuntimeConfig(), store, "exp")
    assert spec.tensorboard == str(tmp_path / "tensorboard") and spec.mlflow_uri is None
    spec = spec_for(RuntimeConfig(tensorboard=False, mlflow=True), store)
    assert spec.mlflow_uri == (tmp_path / "mlruns").resolve().as_uri()


@needs_writer
def test_object_store_output_uploads_the_event_files_on_close(tmp_path):
    import pyarrow.fs as pafs

    remote = tmp_path / "bucket"
    store = SimpleNamespace(is_local=False, root=str(remote), location=f"s3://bucket/{uuid.uuid4().hex}",
                            fs=pafs.LocalFileSystem())
    spec = spec_for(RuntimeConfig(), store)
    assert not spec.tensorboard.startswith(str(remote))  # written locally first
    t = spec.open("gan-abc")
    t.scalar("g_loss", 1.5, 10)
    t.close()
    assert read_scalars(remote / "tensorboard" / "gan-abc") == {"g_loss": [(10, 1.5)]}


def test_mlflow_run_gets_the_metrics(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is not installed here: the MLflow path is untested (pip install "
                                         "mlflow and set runtime.mlflow=true to use it)")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    t = TrackingSpec(mlflow_uri=uri, experiment="tiny").open("teacher-abc")
    t.scalar("train_loss", 0.25, 7)
    t.close()
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    assert run.info.run_name == "teacher-abc" and run.data.metrics["train_loss"] == 0.25


@needs_writer
@pytest.mark.slow
def test_tiny_run_writes_tensorboard_curves_of_every_stage(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "rayflow", "run", "--config", "tiny", "--executor", "local",
                        "--set", f"output_dir={out}", "--set", "dre.feature_net.name=teacher", "--set", "seeds=[0]",
                        "--set", "teacher.train.steps=60", "--set", "student.train.steps=60"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {p.name.split("-")[0]: p for p in (out / "tensorboard").iterdir()}
    assert {"teacher", "nokd", "cgankd", "gan", "dre", "pool"} <= set(runs), sorted(runs)
    teacher = read_scalars(runs["teacher"])
    assert {"train_loss", "lr", "images_per_s", "test_acc"} <= set(teacher)
    assert teacher["train_loss"][-1][0] == 60
    assert {"train_loss", "test_acc"} <= set(read_scalars(runs["cgankd"]))
    gan = read_scalars(runs["gan"])
    assert {"d_loss", "g_loss", "label_consistency", "fid_teacher_features"} <= set(gan)
    assert [s for s, _ in gan["label_consistency"]] == [30, 60]  # one probe per checkpoint
    assert "loss" in read_scalars(runs["dre"])
    pool = read_scalars(runs["pool"])
    assert {"drawn", "draws_per_s", "subsample_accept"} <= set(pool)


@needs_writer
@pytest.mark.slow
def test_ray_train_rank0_writes_the_curves(ray_session, digits, tmp_path):
    """Two Train workers, one writer: rank 0 (the metrics are the same on every rank)."""
    from rayflow.config import ModelConfig, ScalingConfig, TrainConfig
    from rayflow.executors import get_executor
    from rayflow.train.batched import train_jobs
    from rayflow.train.job import SupervisedJob

    job = SupervisedJob(model=ModelConfig(name="mlp"), train_cfg=TrainConfig(steps=30, augment=[]),
                        train=digits.train, test=digits.test)
    train_jobs(get_executor(RuntimeConfig()), [job], names=["student-x"], run_name="tb", storage=(str(tmp_path), None),
               scaling=ScalingConfig(num_workers=2), tracking=TrackingSpec(str(tmp_path / "tb")))
    logdir = tmp_path / "tb" / "student-x"
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    got = read_scalars(logdir)
    assert got["train_loss"][-1][0] == 30 and "test_acc" in got

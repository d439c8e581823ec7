"""KD methods in training and in the pipeline: a conv student with FitNet, AT and CRD on real + fake
batches trains, logs each term, checkpoints its criterion and resumes bit for bit; with no methods
the loop is today's, op for op; the pipeline's KD table comes from real runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import yaml
import pytest
import torch

from rayflow.config import ModelConfig, TrainConfig
from rayflow.kd import CRDConfig, FitNetConfig, ATConfig
from rayflow.models import build_model
from rayflow.train import loop
from rayflow.train.job import FakeData, SupervisedJob, run_job
from rayflow.train.sources import ArraySource, MixedSource, ShardSource

TINY = str(Path(__file__).parents[1] / "rayflow" / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def _teacher_state(name="resnet8"):
    torch.manual_seed(5)
    return build_model(name, in_channels=1, image_size=16, num_outputs=10).state_dict()


def _fake(digits, n=96):
    rng = np.random.default_rng(1)
    return FakeData(digits.train.images[:n][:, :, ::-1].copy(), digits.train.labels[:n],
                    rng.normal(size=(n, 10)).astype(np.float32), real_fraction=0.5)


def _kd_job(digits, steps, methods, **kw):
    return SupervisedJob(model=ModelConfig(name="cnn_small", kwargs={"widths": [8, 16]}),
                         train_cfg=TrainConfig(steps=steps, batch_size=32, augment=["crop", "flip"], seed=3),
                         train=digits.train, teacher=ModelConfig(name="resnet8"), teacher_state=_teacher_state(),
                         kd_alpha=0.5, kd_methods=methods, fake=_fake(digits), log_every=4, **kw)


def _run(job, start_state=None):
    states, metrics = {}, []

    def reporter(m, s):
        metrics.append(dict(m))
        if s is not None:
            states[m["step"]] = copy.deepcopy(s)

    model = job.build()
    run_job(job, model, reporter=reporter, start_state=start_state)
    return model, states, metrics


def test_feature_methods_train_log_their_terms_and_resume_bit_exact(digits):
    methods = [FitNetConfig(), ATConfig(), CRDConfig(nce_k=64, feat_dim=16)]
    job = _kd_job(digits, 8, methods, checkpoint_every=4)
    model, states, metrics = _run(job)
    last = metrics[-1]
    for term in ("task", "kd", "fitnet", "at", "crd"):
        assert np.isfinite(last[f"loss_{term}"]), term
    crit = states[8]["criterion"]
    n = len(digits.train) + len(job.fake.images)
    assert crit["methods.crd.memory_s"].shape == (n, 16)  # CRD's bank covers real + fake
    assert any(k.startswith("methods.fitnet.") for k in crit)  # the hint regressor trained and saved
    start = states[4]
    assert not torch.equal(start["criterion"]["methods.crd.memory_s"], crit["methods.crd.memory_s"])
    resumed, states2, _ = _run(_kd_job(digits, 8, methods, checkpoint_every=4), start_state=start)
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    for k, v in crit.items():
        assert torch.equal(v, states2[8]["criterion"][k]), k


def _historical_loss(model, b, task, crit, teacher):
    """rayflow.train.loop._loss as it was before the Criterion (commit 90a0b68), verbatim."""
    out = model(b["x"])
    loss = task.loss(out, b["y"])
    alpha, temperature = (crit.cfg.alpha, crit.cfg.temperature) if crit is not None else (0.0, 4.0)
    if alpha <= 0:
        return loss
    t = b["t"].to(out.dtype) if "t" in b else torch.full_like(out, float("nan"))
    missing = torch.isnan(t).any(1)
    if teacher is not None and missing.any():
        with torch.no_grad():
            t[missing] = teacher(b["x"][missing]).to(out.dtype)
        missing[:] = False
    have = ~missing
    if not have.any():
        return loss
    return (1 - alpha) * loss + alpha * task.distill(out[have], t[have], temperature)


@pytest.mark.parametrize("teacher", [True, False], ids=["online-teacher", "stored-logits-only"])
def test_without_methods_the_weights_are_todays(digits, monkeypatch, teacher):
    job = SupervisedJob(model=ModelConfig(name="mlp"), train=digits.train, kd_alpha=0.7, temperature=3.0,
                        train_cfg=TrainConfig(steps=12, batch_size=32, augment=["crop"], seed=1),
                        fake=_fake(digits), **({"teacher": ModelConfig(name="resnet8"),
                                                "teacher_state": _teacher_state()} if teacher else {}))
    now = job.build()
    run_job(copy.deepcopy(job), now)
    monkeypatch.setattr(loop, "_step_loss", _historical_loss)
    before = job.build()
    run_job(copy.deepcopy(job), before)
    for k, v in before.state_dict().items():
        assert torch.equal(v, now.state_dict()[k]), k


def test_sources_emit_the_crd_index():
    x = np.zeros((10, 1, 2, 2), np.uint8)
    real = ArraySource(x, np.arange(10), 4, index_offset=0)
    fake = ArraySource(x[:6], np.arange(6), 2, index_offset=10)
    b = MixedSource(real, fake).next_batch()
    assert b["i"][:4].tolist() == b["y"][:4].tolist() and all(10 <= i < 16 for i in b["i"][4:].tolist())
    assert "i" not in ArraySource(x, np.arange(10), 4).next_batch()

    class Shard:
        def iter_batches(self, batch_size, **_):
            ids = np.array([907, 15, 300, 42])
            yield {"image": np.zeros((4, 1, 2, 2), np.uint8), "label": np.arange(4), "sample_id": ids}

    src = ShardSource(Shard(), 4, use_logits=False, use_orig_label=False, seed=0,
                      sample_ids=np.array([300, 15, 42, 907]), index_offset=100)
    assert src.next_batch()["i"].tolist() == [103, 100, 102, 101]  # N_real + rank among the sorted ids
    assert src.num_rows == 4


def test_a_fake_set_smaller_than_a_batch_is_repeated_not_an_error():
    """M = 1 per class gives 10 fakes against a fakes' share of 48 per batch: every batch is full,
    every fake comes back within each pass, and the rows are the set's own."""
    class Shard:
        def iter_batches(self, batch_size, drop_last=True, **_):
            if not drop_last:  # 10 rows: no full batch of `batch_size`
                yield {"image": np.zeros((10, 1, 2, 2), np.uint8), "label": np.arange(10)}

    src = ShardSource(Shard(), 48, use_logits=False, use_orig_label=False, seed=0)
    ys = [src.next_batch()["y"] for _ in range(3)]
    assert all(len(y) == 48 for y in ys)
    for y in ys:  # 5 permutations per pass: each label 4 or 5 times in a batch
        counts = torch.bincount(y, minlength=10)
        assert counts.min() >= 4 and counts.max() <= 5, counts.tolist()


def test_pipeline_kd_table_from_real_runs(tmp_path, capsys):
    """`rayflow run` with kd_table: "m" and "cGAN-KD + m" rows for AT and CRD trained, blkd's rows
    are BLKD and cGAN-KD, the table lands in results.json, the report and the console."""
    from rayflow.cli import main

    out = tmp_path / "out"
    sets = [f"output_dir={out}", "dre.feature_net.name=teacher", "teacher.train.steps=60",
            "student.train.steps=40", "student.model.name=cnn_small", "student.model.kwargs={widths: [8, 16]}",
            "gan.steps=30", "gan.checkpoint_every=15", "dre.steps=20",
            "kd_table=[{method: blkd}, {method: at}, {method: crd, nce_k: 64, feat_dim: 16}, "
            "{method: takd, assistant: cnn_small, assistant_kwargs: {widths: [12, 24]}}]"]
    argv = ["run", "--config", TINY, "--executor", "local"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    captured = capsys.readouterr()
    console = captured.out
    # TAKD's two assistants (real only / real + fakes) are inputs of different rows: one run for both
    assert "assistant ×2" in captured.out + captured.err
    results = json.loads((out / "results.json").read_text())
    table = {e["method"]: e for e in results["kd_table"]}
    assert list(table) == ["blkd", "at", "crd", "takd"]
    rows = {r["model"]: r for r in results["rows"]}
    for e in table.values():
        assert e["alone"] == rows[e["alone_row"]]["test_acc"] and e["with_cgan"] == rows[e["with_cgan_row"]]["test_acc"]
        assert not rows[e["alone_row"]]["reused"] and not rows[e["with_cgan_row"]]["reused"]  # real runs
    assert table["blkd"]["alone_row"] == "BLKD student" and table["blkd"]["with_cgan_row"].startswith("cGAN-KD:")
    assert table["at"]["with_cgan_row"] == "cGAN-KD + at" and "delta" in table["at"]
    assert "loss_at" in rows["at"] and "loss_crd" in rows["cGAN-KD + crd"] and "loss_kd" in rows["cGAN-KD + crd"]
    crd_dir = Path(rows["cGAN-KD + crd"]["artifact"].removeprefix("file://"))
    assert (crd_dir / "kd.safetensors").is_file() and (crd_dir / "model.safetensors").is_file()
    assert not (Path(rows["cGAN-KD + at"]["artifact"].removeprefix("file://")) / "kd.safetensors").exists()
    assert [a["variant"] for a in results["ablation"]][-1].startswith("cGAN-KD:")  # the table's rows stay out
    assert "KD methods (test_acc" in console and "cGAN-KD + at" in console
    # TAKD: each row's student learned from its own cached assistant (real only / real + fakes), which
    # learned from the teacher; the takd student is a different model from the plain cGAN-KD one
    def doc(row):
        return yaml.safe_load((Path(rows[row]["artifact"].removeprefix("file://")) / "config.yaml").read_text())

    alone, with_cgan = doc("takd"), doc("cGAN-KD + takd")
    assert set(alone["inputs"]) == {"assistant"} and set(with_cgan["inputs"]) == {"assistant", "fake"}
    assistants = {d["inputs"]["assistant"]: out / "artifacts" / "assistant" / f"assistant-{d['inputs']['assistant']}"
                  for d in (alone, with_cgan)}
    assert len(assistants) == 2 and all((a / "model.safetensors").is_file() for a in assistants.values())
    for a in assistants.values():
        arch = yaml.safe_load((a / "config.yaml").read_text())
        assert arch["inputs"]["teacher"] and arch["reads"]["kd_table.takd"]["assistant_kwargs"] == {"widths": [12, 24]}
    weights = [(Path(rows[r]["artifact"].removeprefix("file://")) / "model.safetensors").read_bytes()
               for r in ("cGAN-KD + takd", table["blkd"]["with_cgan_row"])]
    assert weights[0] != weights[1]  # other soft labels (the assistant's), so another student
    assert "KD methods: alone vs with cGAN samples" in (out / "report.html").read_text()

"""The useful-fakes lever (student.select_fakes): batches come from the top share by usefulness,
re-scored every N steps against the student as it is then; off by default, keys unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rayflow.ablation import CGAN_KD
from rayflow.config import load_config
from rayflow.config_mix import SelectFakesConfig
from rayflow.stages.graph import Node, node_key
from rayflow.train.select_fakes import SelectedSource, top_share, usefulness


def _source(images, logits, student=None, bs=8, **select):
    cfg = SelectFakesConfig(**{"by": "entropy", **select})
    return SelectedSource(images, np.zeros(len(images), np.int64), bs, teacher_logits=logits, select=cfg,
                          student=student, index_offset=0, seed=3)


def _planted(n=40):
    """Teacher logits whose entropy falls with the row's peak: row i peaks at i (a random order)."""
    peak = np.random.default_rng(0).permutation(n).astype(np.float32) / 4
    logits = np.zeros((n, 3), np.float32)
    logits[:, 0] = peak
    return np.zeros((n, 1, 2, 2), np.uint8), logits, peak


def test_entropy_picks_the_most_uncertain_fakes():
    images, logits, peak = _planted()
    h = usefulness("entropy", torch.from_numpy(logits)).numpy()
    assert np.all(np.diff(h[np.argsort(peak)]) < 0)  # a flatter teacher output: a higher entropy
    src = _source(images, logits, share=0.25)
    src.next_batch()
    assert set(src.top) == set(np.argsort(peak)[:10])  # the 10 flattest of 40


def test_batches_never_come_from_the_bottom_share():
    images, logits, peak = _planted()
    src = _source(images, logits, share=0.5, every=5)
    top = set(np.argsort(peak)[:20])
    drawn = set()
    for _ in range(60):
        drawn |= set(src.next_batch()["i"].tolist())
    assert drawn <= top and len(drawn) == 20  # the whole top half, nothing else
    assert src.rescored == list(range(0, 60, 5))


def test_a_scored_subset_keeps_its_own_top_share():
    images, logits, peak = _planted(200)
    src = _source(images, logits, share=0.5, every=1000, score_size=50)
    drawn = np.concatenate([src.next_batch()["i"].numpy() for _ in range(30)])
    scored_top = np.sort(peak[src.top])
    assert len(src.top) == 25 and peak[drawn].max() <= scored_top[-1]


class Sign(nn.Module):
    """Class 0 for bright images when w > 0, for dark ones when w < 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([self.w * m, -self.w * m], 1)


def test_kl_follows_the_current_student_and_rescoring_waits_every_steps():
    bright = np.arange(20) < 10
    images = np.where(bright[:, None, None, None], 255, 0).astype(np.uint8).repeat(4, 1).reshape(20, 1, 2, 2)
    logits = np.tile(np.float32([5, -5]), (20, 1))  # the teacher: class 0 for all
    student = Sign()
    src = _source(images, logits, student=student, by="kl", every=3, bs=4)
    first = src.next_batch()["i"].numpy()
    assert not bright[first].any()  # the student agrees on the bright ones: the dark ones are chosen
    assert student.training  # scored in eval mode, the train mode given back
    with torch.no_grad():
        student.w.fill_(-5.0)  # now it agrees on the dark ones
    for _ in range(2):  # steps 1, 2: the selection of step 0 holds
        assert not bright[src.next_batch()["i"].numpy()].any()
    assert bright[src.next_batch()["i"].numpy()].all()  # step 3: re-scored with the changed student
    assert src.rescored == [0, 3]


def test_top_share_and_bad_inputs():
    assert top_share(np.array([7, 8, 9]), np.array([0.1, 0.9, 0.5]), 0.5).tolist() == [8, 9]
    with pytest.raises(ValueError, match="regression"):
        _source(np.zeros((4, 1, 2, 2), np.uint8), np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match="needs the student"):
        _source(np.zeros((4, 1, 2, 2), np.uint8), np.zeros((4, 2), np.float32), by="kl")


def test_off_by_default_and_keyed_only_when_on():
    """Default: no dump, no key change; on: the KD student alone re-keyed."""
    cfg = load_config("rayflow/configs/tiny.yaml")
    on = load_config("rayflow/configs/tiny.yaml", ["student.select_fakes={by: kl, share: 0.3}"])
    assert "select_fakes" not in cfg.student.model_dump()
    assert on.student.model_dump()["select_fakes"]["by"] == "kl"
    nodes = [Node.of("teacher"), Node.of("nokd", seed=0), Node.of("blkd", seed=0), Node.of("fm", seed=0)]
    assert all(node_key(on, n) == node_key(cfg, n) for n in nodes)
    assert node_key(on, CGAN_KD.student(0)) != node_key(cfg, CGAN_KD.student(0))


def test_a_job_with_the_lever_draws_its_fakes_by_usefulness():
    """run_job wires the lever: the fake half of each batch comes from a SelectedSource that scores
    with the job's own student; off, the plain ArraySource."""
    from rayflow.config import ModelConfig, TrainConfig
    from rayflow.data.imageset import ImageSet
    from rayflow.train.job import FakeData, SupervisedJob, make_source, run_job

    rng = np.random.default_rng(0)
    train = ImageSet(rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8), rng.integers(0, 3, 16), 3)
    fake = FakeData(rng.integers(0, 256, (32, 1, 8, 8), dtype=np.uint8), rng.integers(0, 3, 32),
                    rng.normal(size=(32, 3)).astype(np.float32), real_fraction=0.5)
    job = SupervisedJob(ModelConfig(name="mlp"), TrainConfig(steps=4, batch_size=8, augment=[], amp=False),
                        train, fake=fake, kd_alpha=0.5, select_fakes=SelectFakesConfig(by="kl", every=2))
    model = job.build()
    src = make_source(job, 0, 1, model=model)
    assert isinstance(src.fake, SelectedSource) and src.fake.student is model
    assert type(make_source(SupervisedJob(job.model, job.train_cfg, train, fake=fake), 0, 1).fake).__name__ == \
        "ArraySource"
    assert np.isfinite(run_job(job, model)["train_loss"])


def test_select_share_is_a_tune_knob_of_the_lever():
    """tune.select_share: a search dimension that sets student.select_fakes.share (re-keying the
    trial's student, not its fakes), refused while the lever is off, not dumped when unset."""
    from rayflow.config import ConfigError
    from rayflow.tuning.search import space_of, with_params

    cfg = load_config("rayflow/configs/tiny.yaml", ["student.select_fakes.by=entropy", "tune.select_share=[0.2, 1]",
                                                    "tune.grid=[1, 1, 1, 1, 1, 3]"])
    grid = space_of(cfg).grid(*cfg.tune.grid)
    assert [c["select_share"] for c in grid] == pytest.approx([0.2, 0.6, 1.0])
    a, b = (with_params(cfg, c, validation=False) for c in grid[:2])
    assert (a.student.select_fakes.share, b.student.select_fakes.share) == pytest.approx((0.2, 0.6))
    assert a.student.select_fakes.by == "entropy"
    assert node_key(a, CGAN_KD.student(0)) != node_key(b, CGAN_KD.student(0))
    assert node_key(a, CGAN_KD.fake_set()) == node_key(b, CGAN_KD.fake_set())
    with pytest.raises(ConfigError, match="useful-fakes lever is off"):
        load_config("rayflow/configs/tiny.yaml", ["tune.select_share=[0.2, 1]"])
    assert "select_share" not in load_config("rayflow/configs/tiny.yaml").tune.model_dump()


def test_a_resumed_source_rescores_at_once():
    images, logits, _ = _planted()
    src = _source(images, logits, every=50)
    src.skip(7)
    assert src.next_batch()["i"].shape == (8,) and src.rescored == [7] and src.n == 8

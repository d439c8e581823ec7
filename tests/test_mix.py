"""MixUp / CutMix (rayflow/train/mix.py) and function matching: the teacher labels the mixed view the
student sees, through the label space (classes and regression alike). No Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rayflow.config import TrainConfig
from rayflow.config_mix import MixConfig
from rayflow.labels import Classes, Continuous
from rayflow.train.loop import train_steps
from rayflow.train.mix import mix_batch, mix_images
from rayflow.train.sources import ArraySource, Batch
from rayflow.train.tasks import Task


def _constant_images(n: int = 8, side: int = 16) -> torch.Tensor:
    """Image i is filled with value i: where each output pixel came from is readable."""
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, side, side).clone()


def _lambdas(alpha: float, kind: str = "mixup", n: int = 2000) -> np.ndarray:
    x = _constant_images(4, 4)
    return np.array([mix_images(x, MixConfig(kind=kind, alpha=alpha), np.random.default_rng(s))[1] for s in range(n)])


def test_mixup_lambda_follows_beta_alpha_alpha():
    uniform, peaked = _lambdas(1.0), _lambdas(0.2)
    assert abs(uniform.mean() - 0.5) < 0.03 and abs(uniform.var() - 1 / 12) < 0.01  # Beta(1, 1)
    assert abs(peaked.mean() - 0.5) < 0.03 and abs(peaked.var() - 1 / (4 * 1.4)) < 0.015  # Beta(.2, .2): near 0 or 1


def test_mixup_is_a_convex_pair_of_batch_images():
    x = _constant_images()
    out, lam, kind = mix_images(x, MixConfig(kind="mixup", alpha=1.0), np.random.default_rng(3))
    assert kind == "mixup" and out.shape == x.shape
    vals = out[:, 0, 0, 0]
    assert torch.allclose(out, vals[:, None, None, None].expand_as(out))  # each a uniform blend of two images
    partner = (vals - lam * torch.arange(8.0)) / (1 - lam)  # the other image's value
    assert torch.allclose(partner, partner.round(), atol=1e-4)
    assert sorted(partner.round().long().tolist()) == list(range(8))  # a permutation of the batch


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_box_area_is_one_minus_lambda(seed):
    x = _constant_images(8, 32)
    out, lam, kind = mix_images(x, MixConfig(kind="cutmix", alpha=1.0), np.random.default_rng(seed))
    drawn = np.random.default_rng(seed).beta(1.0, 1.0)
    assert kind == "cutmix"
    pasted = (out != x).float().mean((1, 2, 3))  # the box, in every image whose partner is another image
    moved = pasted > 0
    assert moved.any()
    assert torch.allclose(pasted[moved], torch.full_like(pasted[moved], 1 - lam))  # returned lambda = exact area
    assert abs((1 - lam) - (1 - drawn)) < 1.5 / 32  # the box is the drawn one, up to rounding to whole pixels


def test_both_chooses_mixup_and_cutmix_per_batch():
    kinds = {mix_images(_constant_images(), MixConfig(kind="both"), np.random.default_rng(s))[2] for s in range(20)}
    assert kinds == {"mixup", "cutmix"}


class _Teacher(nn.Module):
    """Nonlinear (so teacher(mix) differs from a mix of teacher outputs); records what it saw."""

    def __init__(self, outputs: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, outputs))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, return_features=False):
        self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("space", [Classes(5), Continuous()], ids=["classes", "regression"])
def test_mix_batch_labels_are_the_teachers_output_on_the_mixed_view(space):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g) * 2 - 1
    y = torch.zeros(16, dtype=torch.int64) if not space.continuous else torch.rand(16, generator=g)
    b = Batch(x=x, y=y, t=torch.full((16, space.num_outputs), float("nan")), i=torch.arange(16))
    teacher = _Teacher(space.num_outputs)
    out = mix_batch(b, teacher, space, MixConfig(kind="mixup", alpha=1.0), np.random.default_rng(1))
    assert not torch.equal(out["x"], x) and out["x"].shape == x.shape
    with torch.no_grad():
        expect = teacher.net(out["x"])
        # what "mixing the labels" would give instead: not the same thing (the teacher is nonlinear)
        lam = mix_images(x, MixConfig(kind="mixup"), np.random.default_rng(1))[1]
    assert torch.allclose(out["t"], expect)
    assert not torch.allclose(out["t"], lam * teacher.net(x) + (1 - lam) * expect, atol=1e-3)
    assert out["y"].shape == y.shape and out["y"].dtype == y.dtype
    assert torch.equal(out["y"], space.teacher_label(expect).to(y.dtype))  # argmax, or the prediction
    assert torch.equal(out["i"], b["i"]) and torch.equal(b["x"], x)  # the input batch is left alone


class _Spy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, return_features=False):
        self.seen.append(x.detach().clone())
        return self.lin(x)


def _source(n=32):
    rng = np.random.default_rng(0)
    return ArraySource(rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), rng.integers(0, 3, n), 8)


def test_loop_student_and_teacher_see_the_same_mixed_view():
    """Function matching: the online teacher runs on exactly the images the student trains on."""
    from rayflow.kd import KDConfig, build_criterion

    task = Task.of(3)
    student, teacher = _Spy(), _Teacher(3)
    teacher.net[-1] = nn.Linear(16, 3)
    cfg = TrainConfig(steps=3, batch_size=8, augment=[], amp=False)
    crit = build_criterion(KDConfig(alpha=0.5, temperature=4.0), task)
    train_steps(student, _source(), cfg, task, criterion=crit, teacher=teacher, mix=MixConfig(kind="both"))
    train_images = [s for s in student.seen if len(s) == 8]
    assert len(train_images) == 3 and len(teacher.seen) == 3
    for s, t in zip(train_images, teacher.seen):
        assert torch.equal(s, t)
    plain = _Spy()
    train_steps(plain, _source(), cfg, task, criterion=crit, teacher=_Teacher(3))
    assert not torch.equal(plain.seen[0], train_images[0])  # the views were mixed


def test_loop_refuses_mixing_without_a_teacher():
    with pytest.raises(ValueError, match="no teacher"):
        train_steps(_Spy(), _source(), TrainConfig(steps=1, batch_size=8, augment=[]), Task.of(3),
                    mix=MixConfig(kind="mixup"))


def test_mix_off_is_the_plain_loop():
    cfg = TrainConfig(steps=2, batch_size=8, augment=[], amp=False)
    a, b = _Spy(), _Spy()
    b.load_state_dict(a.state_dict())
    train_steps(a, _source(), cfg, Task.of(3))
    train_steps(b, _source(), cfg, Task.of(3), mix=MixConfig())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_regression_function_matching_trains_on_the_teachers_predictions():
    """One code path for continuous labels: y is the teacher's predicted value on the mixed view."""
    from rayflow.kd import KDConfig, build_criterion

    task = Task.of(None)
    rng = np.random.default_rng(0)
    src = ArraySource(rng.integers(0, 256, (32, 1, 8, 8), dtype=np.uint8), rng.random(32).astype(np.float32), 8,
                      label_dtype=task.label_dtype)
    student, teacher = _Spy(), _Teacher(1)
    student.lin[-1] = nn.Linear(64, 1)
    seen_y = []
    crit = build_criterion(KDConfig(alpha=0.5, temperature=4.0), task)
    real_forward = crit.forward
    crit.forward = lambda s, t, y, **kw: seen_y.append((t.clone(), y.clone())) or real_forward(s, t, y, **kw)
    m = train_steps(student, src, TrainConfig(steps=2, batch_size=8, augment=[], amp=False), task,
                    criterion=crit, teacher=teacher, mix=MixConfig(kind="mixup"))
    assert np.isfinite(m["train_loss"]) and len(seen_y) == 2
    for t, y in seen_y:
        assert y.dtype == torch.float32 and torch.allclose(y, t[:, 0].clamp(0, 1))


def test_mix_alpha_is_a_tune_knob_of_the_mixing_lever():
    """tune.mix_alpha: a search dimension that sets student.mix.alpha (re-keying the trial's student
    only), refused while the lever is off, and absent from the tune section's dump when unset (a
    search's name is a digest of that section)."""
    from rayflow.ablation import CGAN_KD
    from rayflow.config import ConfigError, load_config
    from rayflow.stages.graph import node_key
    from rayflow.tuning.search import space_of, with_params

    cfg = load_config("rayflow/configs/tiny.yaml", ["student.mix.kind=both", "tune.mix_alpha=[0.2, 2]",
                                                    "tune.grid=[1, 1, 1, 1, 3]"])
    grid = space_of(cfg).grid(*cfg.tune.grid)
    assert [c["mix_alpha"] for c in grid] == [0.2, 1.1, 2.0]
    a, b = (with_params(cfg, c, validation=False) for c in grid[:2])
    assert (a.student.mix.alpha, b.student.mix.alpha) == (0.2, 1.1) and a.student.mix.kind == "both"
    assert node_key(a, CGAN_KD.student(0)) != node_key(b, CGAN_KD.student(0))
    assert node_key(a, CGAN_KD.fake_set()) == node_key(b, CGAN_KD.fake_set())
    with pytest.raises(ConfigError, match="mixing lever is off"):
        load_config("rayflow/configs/tiny.yaml", ["tune.mix_alpha=[0.2, 2]"])
    assert "mix_alpha" not in load_config("rayflow/configs/tiny.yaml").tune.model_dump()

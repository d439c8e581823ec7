"""The label space: classes and a continuous range answer the same questions, and the GAN side
(probes, routing, the artifact) works for both."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rayflow.data.labels import LabelRange
from rayflow.labels import Classes, Continuous, as_space, space_of


def test_classes_space_is_todays_behaviour():
    s = space_of(3)
    assert isinstance(s, Classes) and s.num_outputs == 3 and s.num_strata == 3 and not s.continuous
    assert s.grid(2).tolist() == [0, 0, 1, 1, 2, 2]
    out = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    y = torch.tensor([0, 2])
    assert s.agreement(out, y).tolist() == [1.0, 0.0] and s.teacher_label(out).tolist() == [0, 1]
    ce = s.teacher_error(out, y)
    assert ce[0] < 0.02 < 4.9 < ce[1]


def test_continuous_space_strata_grid_and_agreement():
    s = Continuous(LabelRange(0.0, 90.0, "deg"), bins=4)
    assert s.num_outputs == 1 and s.num_strata == 4 and s.continuous and s.tolerance == 0.125
    assert s.strata_of([0.0, 0.24, 0.25, 0.99, 1.0]).tolist() == [0, 0, 1, 3, 3]
    g = s.grid(2)
    assert torch.allclose(g, torch.tensor([0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375]))
    assert s.strata_of(g.numpy()).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # every grid label inside its stratum
    out = torch.tensor([[0.5], [0.9], [1.3]])
    y = torch.tensor([0.45, 0.5, 0.95])
    assert torch.allclose(s.teacher_error(out, y), torch.tensor([0.05, 0.4, 0.35]))
    assert s.agreement(out, y).tolist() == [1.0, 0.0, 0.0]
    assert s.teacher_label(out).tolist() == pytest.approx([0.5, 0.9, 1.0])  # clipped into the range
    assert s.display(0.5) == 45.0 and s.display_error(0.1) == pytest.approx(9.0)
    assert isinstance(as_space(None), Continuous) and as_space(s) is s and isinstance(as_space(10), Classes)


class _Pred(torch.nn.Module):
    """A 'teacher' that predicts each image's mean brightness in [0, 1] (features: the pixels)."""

    def forward(self, x, return_features=False):
        out = ((x.flatten(1).mean(1, keepdim=True) + 1) / 2)
        return (out, [x.flatten(1)]) if return_features else out


def test_gan_quality_on_continuous_labels_counts_agreement_and_mae():
    from rayflow.gan.quality import gan_quality

    y = torch.linspace(0.05, 0.95, 40)
    right = (y[:, None, None, None] * 255).round().to(torch.uint8).expand(40, 1, 4, 4).contiguous()
    wrong = torch.flip(right, [0])
    good = gan_quality(_Pred(), right, y, num_classes=Continuous(bins=4))
    bad = gan_quality(_Pred(), wrong, y, num_classes=Continuous(bins=4))
    assert good["label_consistency"] == 100.0 and good["label_mae"] < 0.01
    assert bad["label_consistency"] < 30.0 and bad["label_mae"] > 0.3
    assert len(good["label_consistency_per_class"]) == 4


def test_routed_generator_routes_continuous_labels_by_stratum():
    from rayflow.gan.routed import ClassRoutedGenerator

    class Const(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v, self.z_dim, self.out_channels, self.image_size = v, 2, 1, 1

        def forward(self, z, y):
            return torch.full((len(y), 1, 1, 1), float(self.v))

    G = ClassRoutedGenerator([Const(0), Const(1)], routes=[0, 1, 1, 0], continuous=True)
    assert G.num_classes is None
    out = G(torch.zeros(5, 2), torch.tensor([0.1, 0.3, 0.6, 0.9, 1.0]))
    assert out.flatten().tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.slow
def test_regression_gan_stage_runs_and_its_artifact_reloads(tmp_path):
    """Teacher + CcGAN on rotated digits, local executor: the artifact samples float labels."""
    cmd = [sys.executable, "-m", "rayflow", "stage", "gan", "--config", "regression_tiny",
           "--set", f"output_dir={tmp_path}", "--set", "gan.steps=40", "--set", "gan.checkpoint_every=20",
           "--set", "teacher.train.steps=200"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "continuous labels: soft vicinity" in p.stdout
    (gan_dir,) = (tmp_path / "artifacts" / "gan").glob("gan-*")
    teacher = json.loads(next((tmp_path / "artifacts" / "teacher").glob("teacher-*/metrics.json")).read_text())
    assert teacher["test_mae"] < 0.5 * 0.25  # predicting the mean of U[0, 1) scores 0.25
    metrics = json.loads((gan_dir / "metrics.json").read_text())
    assert "label_mae" in metrics and len(metrics["label_consistency_per_class"]) == 10
    assert len(metrics["coverage_per_class"]) == 10 and (gan_dir / "nearest_real.png").is_file()  # per stratum

    from rayflow.gan import generate
    from rayflow.gan.artifact import arch_of, load_generator

    assert arch_of(gan_dir)["num_classes"] is None
    G = load_generator(gan_dir)
    imgs = generate(G, torch.tensor([0.1, 0.9]), seed=0)
    assert imgs.shape == (2, 1, 16, 16) and imgs.dtype == torch.uint8 and not np.array_equal(imgs[0], imgs[1])


def test_plain_kd_for_a_scalar_output_pulls_towards_the_teachers_prediction():
    from rayflow.train.tasks import Task

    task = Task.of(None)
    out = torch.tensor([[0.2], [0.8]], requires_grad=True)
    near, far = task.distill(out, torch.tensor([[0.2], [0.8]]), 4.0), task.distill(out, torch.tensor([[0.9], [0.1]]), 4.0)
    assert near.item() == 0.0 and far.item() == pytest.approx(0.49)
    far.backward()
    assert out.grad[0, 0] < 0 < out.grad[1, 0]  # descent moves each output towards the teacher's

"""Precision / recall / density / coverage (gan/manifold.py): known answers, the chunked distances
against a brute-force reference, per-stratum splitting for classes and continuous labels, the
nearest-real grid, and the GAN stage's final metrics carrying them (no Ray)."""

import json
import types

import numpy as np
import pytest
import torch

from rayflow.gan import manifold
from rayflow.gan.manifold import K, nearest, prdc, prdc_per_stratum
from rayflow.labels import Classes, Continuous

pytestmark = pytest.mark.usefixtures("one_thread")


def _gauss(n, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _reference(real, fake, k=K):
    """The definitions written out with exact pairwise distances (small sets only)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=2)
    r_real, r_fake = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]
    inside = d_fr <= r_real[None]
    return {"precision": inside.any(1).mean(), "recall": (d_fr <= r_fake[:, None]).any(0).mean(),
            "density": inside.sum() / (k * len(fake)), "coverage": (d_fr.min(0) <= r_real).mean()}


@pytest.mark.parametrize("d", [2, 64])
def test_a_set_against_itself_is_exactly_covered(d):
    x = _gauss(400, d) + 3.0  # off the origin: rounding of the matmul form must not move a ball's edge
    m = prdc(x, x)
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    # each real ball holds its centre and its k neighbours: (k + 1) / k, not 1, for the set itself
    assert m["density"] == pytest.approx((K + 1) / K)


def test_two_draws_of_one_distribution_score_about_one():
    m = prdc(_gauss(2000, 2, seed=1), _gauss(2000, 2, seed=2))
    assert m["precision"] > 0.95 and m["recall"] > 0.95
    assert abs(m["density"] - 1.0) < 0.1
    assert m["coverage"] > 0.93  # Naeem et al.: 1 - 2^-k ~ 0.97 for equal sizes


def test_a_collapsed_set_keeps_precision_and_loses_recall_and_coverage():
    real = _gauss(1000, 8)
    collapsed = np.repeat(real[:3], [334, 333, 333], axis=0)  # three modes, each a real point
    m = prdc(real, collapsed)
    assert m["recall"] <= 0.1 and m["coverage"] <= 0.1
    assert m["precision"] == 1.0


def test_a_shifted_set_has_low_precision_and_density():
    real = _gauss(1000, 8)
    m = prdc(real, _gauss(1000, 8, seed=3) + 4.0)
    assert m["precision"] <= 0.05 and m["density"] <= 0.05 and m["coverage"] <= 0.05


def test_chunked_distances_match_the_definition(monkeypatch):
    real, fake = _gauss(150, 3, seed=4), 1.3 * _gauss(120, 3, seed=5) + 0.2
    want = _reference(real, fake)
    assert prdc(real, fake) == pytest.approx(want)
    monkeypatch.setattr(manifold, "_CHUNK_ELEMS", 500)  # a few rows per chunk: the same answer
    assert prdc(real, fake) == pytest.approx(want)
    assert prdc(real, fake) == prdc(real, fake)  # deterministic


def test_too_few_points_give_none():
    assert prdc(_gauss(K, 2), _gauss(50, 2)) == dict.fromkeys(("precision", "recall", "density", "coverage"))


def test_per_stratum_reports_each_class_and_the_mean():
    real = np.concatenate([_gauss(300, 4, seed=6), _gauss(300, 4, seed=7) + 10.0])
    r_lab = np.repeat([0, 1], 300)
    fake = np.concatenate([_gauss(300, 4, seed=8), np.repeat(real[300:303], 100, axis=0)])  # class 1 collapsed
    out = prdc_per_stratum(real, r_lab, fake, r_lab, num_strata=3)
    assert out["recall_per_class"][0] > 0.8 and out["recall_per_class"][1] <= 0.1
    assert out["coverage_per_class"][1] <= 0.1 and out["recall_per_class"][2] is None  # class 2: no samples
    assert out["recall"] == pytest.approx(np.mean(out["recall_per_class"][:2]))
    # pooled over classes the collapse would hide behind the healthy class; per class it cannot
    assert out["coverage"] < 0.6


class _Pixels(torch.nn.Module):
    """A 'teacher' whose features are the pixels (in [-1, 1]) and whose output is their mean."""

    def forward(self, x, return_features=False):
        out = x.flatten(1).mean(1, keepdim=True)
        return (out, [x.flatten(1)]) if return_features else out


def _images(n, seed, size=4, lo=0, hi=256):
    return torch.from_numpy(np.random.default_rng(seed).integers(lo, hi, (n, 1, size, size), dtype=np.uint8))


def test_manifold_quality_on_classes_pairs_equal_numbers_per_class():
    from rayflow.gan.quality import manifold_quality

    real = _images(600, 0)
    r_lab = np.repeat([0, 1, 2], 200)
    # class 0 = its reals, class 1 one image again and again, class 2 fewer fakes than reals, class 3 no reals
    fakes = torch.cat([real[:200], real[200:201].repeat(300, 1, 1, 1), _images(50, 1), _images(40, 2)])
    f_lab = torch.tensor([0] * 200 + [1] * 300 + [2] * 50 + [3] * 40)
    out = manifold_quality(_Pixels(), fakes, f_lab, real.numpy(), r_lab, Classes(4))
    assert out["manifold_n_per_class"] == [200, 200, 50, 0]  # per class, the smaller side's count
    assert out["precision_per_class"][0] == out["recall_per_class"][0] == out["coverage_per_class"][0] == 1.0
    assert out["recall_per_class"][1] <= 0.1 and out["coverage_per_class"][1] <= 0.1
    assert out["precision_per_class"][2] is not None and out["precision_per_class"][3] is None
    json.dumps(out)  # results.json material


def test_manifold_quality_on_continuous_labels_works_per_stratum():
    """One code path: the same call with a continuous space measures each label stratum."""
    from rayflow.gan.quality import manifold_quality

    space = Continuous(bins=4)
    r_lab = np.random.default_rng(1).uniform(0, 1, 400).astype(np.float32)
    real = torch.from_numpy((np.random.default_rng(2).integers(0, 64, (400, 1, 4, 4)) + 160 * (r_lab >= 0.5)
                             [:, None, None, None]).astype(np.uint8))  # strata 2, 3 brighter
    f_lab = torch.from_numpy(r_lab)
    fakes = real.clone()
    bad = space.strata_of(r_lab) == 3
    fakes[torch.from_numpy(bad)] = 0  # stratum 3's fakes: black, far from its reals
    out = manifold_quality(_Pixels(), fakes, f_lab, real.numpy(), r_lab, space)
    assert len(out["precision_per_class"]) == 4
    assert all(out["precision_per_class"][c] == 1.0 for c in range(3))
    assert out["precision_per_class"][3] <= 0.05 and out["coverage_per_class"][3] <= 0.05
    assert out["manifold_n_per_class"] == np.bincount(space.strata_of(r_lab), minlength=4).tolist()


def test_nearest_matches_brute_force(monkeypatch):
    q, ref = _gauss(70, 5, seed=9), _gauss(90, 5, seed=10)
    want = np.linalg.norm(q[:, None] - ref[None], axis=2).argmin(1)
    monkeypatch.setattr(manifold, "_CHUNK_ELEMS", 200)
    assert (nearest(q, ref) == want).all()


def test_nearest_real_grid_shows_a_memorised_fake_over_itself(tmp_path):
    from PIL import Image

    from rayflow.gan.quality import nearest_real_grid

    train = _images(200, 3, size=6).numpy()
    fakes = torch.from_numpy(train[[5, 17, 40, 41, 99, 150]])  # copies of training images
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = nearest_real_grid(_Pixels(), fakes, labels, train, Classes(2), tmp_path / "n.png", per_stratum=3)
    assert out == {"nearest_real_searched": 200}
    img = np.asarray(Image.open(tmp_path / "n.png"))
    p, s = 2, 6
    assert img.shape == (4 * (s + p) + p, 3 * (s + p) + p)  # per class a row of fakes over their neighbours
    for row in (0, 2):
        for col in range(3):
            y, x = p + row * (s + p), p + col * (s + p)
            top, below = img[y:y + s, x:x + s], img[y + s + p:y + 2 * s + p, x:x + s]
            assert (top == below).all()


def _as_regression(splits):
    """digits with a continuous label (class / 10 + jitter in [0, 1)) and no held-out split."""
    from rayflow.data.imageset import ImageSet

    def cont(s):
        y = (s.labels + np.random.default_rng(0).uniform(0, 1, len(s))) / 10
        return ImageSet(s.images, y.astype(np.float32), None)

    return types.SimpleNamespace(train=cont(splits.train), test=cont(splits.test), heldout=None, num_classes=None)


@pytest.mark.parametrize("task", ["classes", "continuous"])
def test_gan_stage_final_metrics_carry_the_manifold_metrics(tmp_path, digits, task):
    """The GAN stage's `_final_quality` on an (untrained) tiny artifact and teacher, as build_gan
    calls it, for class and continuous labels alike: the metrics gain the four means and their
    per-stratum lists, and nearest_real.png."""
    from rayflow.config import ModelConfig, load_config
    from rayflow.gan.artifact import save_generator
    from rayflow.gan.sampling import generator_spec, grid_labels
    from rayflow.labels import space_of
    from rayflow.models import build_model
    from rayflow.models.io import save_model
    from rayflow.stages.gan import NEAREST_GRID, _final_quality, _manifold_text

    splits = digits if task == "classes" else _as_regression(digits)
    space = space_of(splits.num_classes)
    torch.manual_seed(0)
    cfg = load_config("rayflow/configs/tiny.yaml").gan
    save_generator(tmp_path, generator_spec(cfg, splits.train)().eval(), cfg, splits.train)
    tdir = tmp_path / "teacher"
    tdir.mkdir()
    outs = space.num_outputs
    save_model(tdir, build_model("mlp", in_channels=1, image_size=16, num_outputs=outs).state_dict(),
               ModelConfig(name="mlp"), 1, 16, outs)
    q = _final_quality(types.SimpleNamespace(splits=splits), tmp_path, types.SimpleNamespace(path=tdir), grid_labels)
    for k in ("precision", "recall", "density", "coverage"):
        assert isinstance(q[k], float) and len(q[f"{k}_per_class"]) == 10
    assert "fid_teacher_features" in q and len(q["label_consistency_per_class"]) == 10
    # no held-out split: measured against the test images, as many per stratum as it has
    want = np.minimum(np.bincount(space.strata_of(splits.test.labels), minlength=10), 200).tolist()
    assert q["manifold_n_per_class"] == want
    assert (tmp_path / NEAREST_GRID).is_file() and q["nearest_real_searched"] == len(splits.train)
    assert "precision / recall / density / coverage" in _manifold_text(q)
    json.dumps(q)


def test_report_shows_the_manifold_metrics_and_the_nearest_grid(tmp_path):
    from rayflow.gan.grid import save_grid_png
    from rayflow.report.fakes import grids
    from rayflow.report.html import render_report

    gan = {"steps": 10, "label_consistency": 90.0, "label_consistency_per_class": [90.0, 90.0],
           "precision": 0.81, "recall": 0.42, "density": 0.95, "coverage": 0.63,
           "precision_per_class": [0.8, 0.82], "recall_per_class": [0.4, 0.44],
           "density_per_class": [0.9, 1.0], "coverage_per_class": [0.6, 0.66], "nearest_real_searched": 7}
    page = render_report({"gan": gan})
    for text in ("coverage (mean over classes)", "<td>0.63</td>", "<td>0.44</td>", "Naeem"):
        assert text in page
    assert "Naeem" not in render_report({"gan": {"steps": 10}})  # an artifact built before the metrics
    save_grid_png(np.zeros((4, 1, 4, 4), np.uint8), tmp_path / "nearest_real.png", nrow=2)
    shown = grids(types.SimpleNamespace(path=tmp_path, metrics=gan), {}, tmp_path, Classes(2))
    assert any("nearest real training image" in t and "among 7" in t for t in shown)


def test_paired_strata_takes_as_many_reals_as_fakes_per_stratum():
    from rayflow.gan.quality import paired_strata

    f_strata, r_strata = np.repeat([0, 1, 2], [30, 10, 5]), np.repeat([0, 1, 3], [12, 40, 9])
    fi, ri = paired_strata(f_strata, r_strata)
    assert np.bincount(f_strata[fi], minlength=4).tolist() == [12, 10, 0, 0]
    assert np.bincount(r_strata[ri], minlength=4).tolist() == [12, 10, 0, 0]
    assert (paired_strata(f_strata, r_strata)[1] == ri).all()  # seeded

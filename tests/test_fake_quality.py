"""Precision / recall / coverage of the fake set each ablation row trains on (synth/quality.py):
known answers, grouping by the label the student trains on, the per-class cap, the pipeline's
annotation of ablation rows, and the console / report columns shown only when measured (no Ray)."""

import numpy as np
import pytest
import torch

from rayflow.data.imageset import ImageSet
from rayflow.labels import Classes, Continuous
from rayflow.synth import quality
from rayflow.synth.quality import KEYS, capped, fake_set_quality, view_quality

pytestmark = pytest.mark.usefixtures("one_thread")


class _Pixels(torch.nn.Module):
    """A 'teacher' whose features are the pixels."""

    def forward(self, x, return_features=False):
        out = x.flatten(1).mean(1, keepdim=True)
        return (out, [x.flatten(1)]) if return_features else out


def _reals(per_class=200, classes=2, seed=0):
    """Class c's images in a brightness band of their own: a wrong class is far in pixel space."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    imgs = rng.integers(0, 64, (len(labels), 1, 4, 4)) + (192 // max(classes - 1, 1)) * labels[:, None, None, None]
    return ImageSet(imgs.astype(np.uint8), labels, classes)


def _write_view(tmp_path, images, label, orig_label, space):
    """One Parquet shard holding `images` and a view's rows over it (what stages.synth.view_files gives)."""
    from rayflow.synth.io import sample_ids, write_shards

    n = len(images)
    batch = {"shard_id": np.zeros(n, np.int64), "draw": np.arange(n), "n_draws": np.full(n, n), "image": images,
             "label": label, "orig_label": orig_label, "keep": np.ones(n, bool), "accepted": np.ones(n, bool),
             "ratio": np.ones(n, np.float32), "teacher_ce": np.zeros(n, np.float32),
             "teacher_logits": np.zeros((n, space.num_outputs), np.float32)}
    out = write_shards(batch, out_dir=str(tmp_path), image_shape=images.shape[1:], num_classes=space)
    files = np.array([tmp_path / out["file"][0]] * n, dtype=object)
    return {"file": files, "sample_id": sample_ids(np.zeros(n, np.int64), np.arange(n)), "label": label,
            "orig_label": orig_label}


def test_the_held_out_reals_themselves_score_one_and_a_collapsed_set_does_not():
    held = _reals()
    same = fake_set_quality(_Pixels(), held.images, held.labels, held, Classes(2))
    assert set(same) == set(KEYS)
    assert same["fake_precision"] == same["fake_recall"] == same["fake_coverage"] == 1.0
    three = np.repeat(held.images[[0, 1, 2, 200, 201, 202]], [67, 67, 66, 67, 67, 66], axis=0)  # 3 points a class
    collapsed = fake_set_quality(_Pixels(), three, np.repeat([0, 1], 200), held, Classes(2))
    assert collapsed["fake_recall"] <= 0.1 and collapsed["fake_coverage"] <= 0.1
    assert collapsed["fake_precision"] == 1.0
    from rayflow.gan.quality import _embed  # features embedded once by the caller: the same answer

    feats = _embed(_Pixels(), torch.as_tensor(held.images))[1]
    assert fake_set_quality(_Pixels(), three, np.repeat([0, 1], 200), held, Classes(2), feats) == collapsed


def test_no_held_out_images_means_no_metrics():
    held = _reals()
    assert fake_set_quality(_Pixels(), held.images, held.labels, None, Classes(2)) == {}
    empty = ImageSet(held.images[:0], held.labels[:0], 2)
    assert view_quality(_Pixels(), {}, empty, Classes(2), orig_labels=True) == {}


def test_fakes_are_grouped_by_the_label_the_student_trains_on(tmp_path):
    """Copies of the reals whose conditioning label is wrong and whose final (teacher's) label is
    right: measured by the final label they are the reals; by the conditioning label, far off."""
    held = _reals()
    right, wrong = held.labels, 1 - held.labels
    rows = _write_view(tmp_path, held.images, label=right, orig_label=wrong, space=Classes(2))
    final = view_quality(_Pixels(), rows, held, Classes(2), orig_labels=False)
    cond = view_quality(_Pixels(), rows, held, Classes(2), orig_labels=True)
    assert final["fake_precision"] == final["fake_recall"] == final["fake_coverage"] == 1.0
    assert cond["fake_precision"] <= 0.05 and cond["fake_coverage"] <= 0.05


def test_continuous_labels_are_measured_per_stratum(tmp_path):
    space = Continuous(bins=4)
    y = np.random.default_rng(1).uniform(0, 1, 400).astype(np.float32)
    imgs = (np.random.default_rng(2).integers(0, 40, (400, 1, 4, 4)) + 60 * space.strata_of(y)[:, None, None, None])
    held = ImageSet(imgs.astype(np.uint8), y, None)
    rows = _write_view(tmp_path, held.images, label=y, orig_label=y, space=space)
    out = view_quality(_Pixels(), rows, held, space, orig_labels=True)
    assert out["fake_precision"] == out["fake_recall"] == out["fake_coverage"] == 1.0


def test_the_cap_samples_each_class_the_same_way_every_time(tmp_path, monkeypatch):
    strata = np.repeat([0, 1, 2], [3000, 1500, 500])  # 5,000 rows
    pick = capped(strata, cap=1000)
    assert np.bincount(strata[pick]).tolist() == [1000, 1000, 500]
    assert (pick == capped(strata, cap=1000)).all() and (np.diff(pick) > 0).all()
    assert not (pick == capped(strata, cap=1000, seed=1)).all()
    # through a view: the measured fakes are the capped, seeded sample, read from the Parquet file
    labels = np.repeat([0, 1], 2500)
    imgs = np.random.default_rng(3).integers(0, 256, (5000, 1, 4, 4)).astype(np.uint8)
    rows = _write_view(tmp_path, imgs, label=labels, orig_label=labels, space=Classes(2))
    seen = []
    monkeypatch.setattr(quality, "fake_set_quality", lambda t, im, lab, h, s, f: seen.append((im, lab)) or {})
    for _ in range(2):
        view_quality(_Pixels(), rows, _reals(), Classes(2), orig_labels=True)
    (im, lab), (im2, _) = seen
    assert np.bincount(lab).tolist() == [1000, 1000] and (im == im2).all()
    assert (im == imgs[capped(labels)]).all()


def test_annotate_adds_the_metrics_to_each_ablation_row_once_per_fake_set_and_label(monkeypatch):
    from types import SimpleNamespace as NS

    import rayflow.models.io
    import rayflow.stages.synth

    held = _reals()
    calls = []
    view = {"file": None, "sample_id": None, "label": held.labels, "orig_label": held.labels}
    monkeypatch.setattr(rayflow.models.io, "load_model", lambda d: _Pixels())
    monkeypatch.setattr(rayflow.stages.synth, "view_files", lambda runner, art: view)
    monkeypatch.setattr(quality, "view_quality", lambda t, rows, h, s, orig_labels, held_feats:
                        calls.append((orig_labels, len(h), held_feats.shape)) or {k: 0.5 for k in KEYS})
    art = NS(uri="mem://view/a")
    fakes = {"cond": (NS(orig_labels=True, relabel=True), art, None),
             "final": (NS(orig_labels=False, relabel=True), art, None),
             "lever": (NS(orig_labels=False, relabel=True), art, None)}
    rows = [{"variant": v} for v in ("cond", "final", "lever", "not a fake row")]
    monkeypatch.setattr(quality, "CAP", 150)  # at most CAP held-out reals per class, embedded once
    quality.annotate(rows, fakes, "teacher", held, Classes(2))
    # the lever's view and label are the "final" row's: measured once
    assert calls == [(True, 300, (300, 16)), (False, 300, (300, 16))]
    assert all(r["fake_precision"] == 0.5 for r in rows[:3]) and "fake_precision" not in rows[3]
    rows = [{"variant": "cond"}]
    quality.annotate(rows, fakes, "teacher", None, Classes(2))  # no held-out images: nothing added
    assert rows == [{"variant": "cond"}]


def _results(with_metrics):
    rows = [{"model": m, "seed": 0, "test_acc": 80.0, "wall_s": 1.0, "reused": True}
            for m in ("NOKD student", "fake, no processing (conditioning labels)", "cGAN-KD: + KD term on soft labels")]
    abl = [{"variant": m, "test_acc": 80.0, **({"fake_precision": 0.81, "fake_recall": 0.42, "fake_density": 0.95,
                                                 "fake_coverage": 0.63} if with_metrics else {})}
           for m in ("fake, no processing (conditioning labels)", "cGAN-KD: + KD term on soft labels")]
    return {"metric": "test_acc", "rows": rows, "ablation": abl}


def test_the_console_table_shows_p_r_c_columns_only_when_measured():
    from rayflow.report.summary import format_results

    with_m, without = format_results(_results(True)), format_results(_results(False))
    assert len(with_m.splitlines()) == len(without.splitlines())  # columns, not lines
    assert "fakes P/R/C" in with_m.splitlines()[0] and "0.81/0.42/0.63" in with_m.splitlines()[2]
    assert "0.81" not in with_m.splitlines()[1]  # NOKD: no fake set
    assert "P/R/C" not in without and without.splitlines()[1].endswith("yes")


def test_the_report_ablation_table_shows_the_columns_only_when_measured():
    from rayflow.report.html import _ablation

    with_m, without = _ablation(_results(True)["ablation"], "test_acc"), _ablation(_results(False)["ablation"],
                                                                                   "test_acc")
    assert "fakes&#x27; coverage" in with_m and "0.63" in with_m and "held-out reals" in with_m
    assert "coverage" not in without and "held-out" not in without

"""Synthesis, filtering and views for a continuous label: draws spread inside label strata, one global
rho-quantile of |teacher - y| (not per stratum), relabelling writes the teacher's prediction, a view
of a scored pool selects what a filtering run keeps. Tiny random-init nets, local executor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_synth import QUIET, SIZE, cfg_

from rayflow.config import ModelConfig
from rayflow.dre import build_ratio_net
from rayflow.labels import Continuous
from rayflow.models import build_model
from rayflow.models.io import save_model
from rayflow.synth import GeneratorSpec, Manifest, SynthInputs, read_fake_set, read_shard, run_synth
from rayflow.synth.io import sample_ids
from rayflow.synth.view import View, pool_index, quota, read_view, select

SPACE = Continuous(bins=4)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg_nets")
    torch.manual_seed(0)
    teacher = build_model("cnn_small", in_channels=1, image_size=SIZE, num_outputs=1, widths=(8, 8, 8))
    with torch.no_grad():  # predictions spread over [0, 1] instead of a near-constant
        teacher.head.bias.fill_(0.5)
        teacher.head.weight.mul_(20)
    save_model(root / "teacher", teacher.state_dict(), ModelConfig(name="cnn_small", kwargs={"widths": [8, 8, 8]}),
               1, SIZE, 1)
    feat = build_model("mlp", in_channels=1, image_size=SIZE, num_outputs=1, hidden=[16])
    save_model(root / "features", feat.state_dict(), ModelConfig(name="mlp", kwargs={"hidden": [16]}), 1, SIZE, 1)
    ratio = build_ratio_net([16, 16], 16, SPACE)
    torch.nn.init.constant_(ratio.body[-2].bias, 1.0)  # positive ratios from a random init
    spec = GeneratorSpec(None, z_dim=8, base_channels=8, out_channels=1, image_size=SIZE,
                         label_embedding="sinusoidal", embed_dim=16)
    return SynthInputs(num_classes=SPACE, generator=spec, generator_state=spec().state_dict(),
                       teacher_dir=str(root / "teacher"), feature_dir=str(root / "features"),
                       ratio_state=ratio.state_dict(), ratio_hidden=(16, 16), rho=0.7, dre_burnin=100,
                       filter_burnin=40)


@pytest.fixture(scope="module")
def filtered(cnets, tmp_path_factory):
    out = tmp_path_factory.mktemp("reg_synth")
    m = run_synth(dataclasses.replace(cnets, subsample=True, filter=True, relabel=True), cfg_(), out, options=QUIET)
    return out, m


def test_draws_spread_inside_their_stratum(filtered):
    out, m = filtered
    man = Manifest.load(out)
    assert man.space == SPACE and m["num_classes"] == SPACE.num_strata
    seen = 0
    for sid, rec in man.records.items():
        y = read_shard(out / rec["file"])["orig_label"]  # the kept draws (a shard may keep none)
        assert y.dtype == np.float32
        assert (SPACE.strata_of(y) == rec["label"]).all()  # inside the shard's stratum ...
        assert len(np.unique(y)) == len(y)  # ... and spread, not one value
        seen += len(y)
    assert seen >= 40 * SPACE.num_strata


def test_global_cutoff_keeps_rho_of_the_burnin_and_relabels_with_the_teacher(filtered, cnets):
    from rayflow.data.transforms import to_float
    from rayflow.models.io import load_model

    out, m = filtered
    b = m["burnin"]
    assert len(set(b["cutoffs"])) == 1  # one global cutoff, repeated per stratum
    # the burn-in keeps rho of its draws overall (not rho of each stratum)
    rates = np.asarray(b["filter_rate"])
    assert abs(rates.mean() - 0.7) < 0.05 and rates.std() > 0
    fs = read_fake_set(out)
    assert fs.labels.dtype == np.float32 and fs.teacher_logits.shape[1] == 1
    teacher = load_model(cnets.teacher_dir).eval()
    with torch.no_grad():
        pred = teacher(to_float(torch.from_numpy(fs.images)))[:, 0].numpy()
    np.testing.assert_allclose(fs.teacher_logits[:, 0], pred, atol=1e-4)
    np.testing.assert_allclose(fs.labels, np.clip(pred, 0, 1), atol=1e-4)  # replaced by the prediction
    np.testing.assert_allclose(fs.teacher_ce, np.abs(pred - fs.orig_labels), atol=1e-4)
    assert (fs.teacher_ce <= b["cutoffs"][0] + 1e-6).all()  # the filter dropped everything above it


def test_filter_really_drops_the_worst_draws(cnets, tmp_path):
    """Unfiltered vs filtered over the same draws: every dropped accepted draw has a larger error
    than every kept one (a global threshold), and about 1 - rho of them go."""
    raw, _ = tmp_path / "raw", None
    inputs = dataclasses.replace(cnets, subsample=False, pool=True, filter=False, relabel=False)
    run_synth(inputs, cfg_(m_per_class=80), raw, options=QUIET)
    idx = pool_index([raw])
    burnin = Manifest.load(raw).burnin
    rows = select(idx, burnin, View(subsample=False, rho=0.7, relabel=True, m_per_class=1), SPACE)
    assert rows["label"].dtype == np.float32
    keep = np.isin(idx["sample_id"], select(idx, burnin, View(False, 0.7, True, 1), SPACE)["sample_id"])
    from rayflow.synth.view import _eligible

    ok = _eligible(idx, burnin, View(False, 0.7, True, 1), SPACE)
    assert keep.sum() <= ok.sum()
    assert idx["teacher_ce"][ok].max() <= idx["teacher_ce"][~ok].min()
    assert 0.55 < ok.mean() < 0.85


def test_view_of_a_continuous_pool_selects_what_the_synth_stage_keeps(cnets, tmp_path):
    from rayflow.synth.burnin import compute_burnin
    from rayflow.synth.udfs import Generate, Label, Score

    out, cfg, m = tmp_path / "pool", cfg_(m_per_class=120), 4
    run_synth(dataclasses.replace(cnets, subsample=True, filter=False, relabel=False, pool=True), cfg, out,
              options=QUIET)
    man = Manifest.load(out)
    ref = compute_burnin(dataclasses.replace(cnets, subsample=True, filter=True, relabel=True), cfg)
    gen = Generate(cnets.generator, cnets.generator_state, batch_size=cfg.batch_size, space=SPACE)
    score = Score(cnets.feature_dir, cnets.ratio_state, num_classes=SPACE, ratio_hidden=(16, 16),
                  max_ratio=ref.max_ratio, seed=cfg.seed, batch_size=cfg.batch_size)
    label = Label(cnets.teacher_dir, num_classes=SPACE, cutoffs=ref.cutoffs, relabel=True, batch_size=cfg.batch_size)
    ids, labels, strata = [], [], []
    for spec in man.specs():
        b = label(score(gen({k: np.array([v]) for k, v in spec.item().items()})))
        ids.append(sample_ids(b["shard_id"], b["draw"])[b["keep"]])
        labels.append(b["label"][b["keep"]])
        strata.append(np.full(int(b["keep"].sum()), spec.label))
    ids, labels, strata = map(np.concatenate, (ids, labels, strata))
    order = np.argsort(ids)
    ids, labels, strata = ids[order], labels[order], strata[order]
    view = View(subsample=True, rho=0.7, relabel=True, m_per_class=m)
    q = quota(SPACE, np.bincount(strata, minlength=SPACE.num_strata), view)
    want = np.sort(np.concatenate([np.flatnonzero(strata == c)[:q[c]] for c in range(SPACE.num_strata)]))

    rows = select(pool_index([out]), man.burnin, view, SPACE)
    np.testing.assert_array_equal(rows["sample_id"], ids[want])
    np.testing.assert_array_equal(rows["label"], labels[want])
    fs = read_view(rows["file"], rows["sample_id"], rows["label"])
    assert len(fs.labels) == m * SPACE.num_strata
    assert np.bincount(SPACE.strata_of(fs.orig_labels), minlength=SPACE.num_strata).tolist() == q.tolist()


def test_a_global_filter_shares_the_view_by_what_each_stratum_keeps():
    """Classes: m per class. A continuous label under a filter: m x strata in all, in proportion to
    each stratum's eligible draws (a stratum the filter empties does not block the view)."""
    from rayflow.labels import Classes
    from rayflow.synth.view import ViewShortError

    v = View(subsample=False, rho=0.7, relabel=True, m_per_class=10)
    assert quota(Classes(3), np.array([10, 50, 12]), v).tolist() == [10, 10, 10]
    with pytest.raises(ViewShortError, match=r"class\(es\) \[0\]"):
        quota(Classes(3), np.array([9, 50, 12]), v)
    q = quota(SPACE, np.array([0, 30, 60, 30]), v)  # 40 in all, stratum 0 kept nothing
    assert q.tolist() == [0, 10, 20, 10] and q.sum() == 40
    with pytest.raises(ViewShortError, match="all label strata together"):
        quota(SPACE, np.array([5, 5, 5, 5]), v)
    # unfiltered continuous views stay balanced per stratum
    assert quota(SPACE, np.array([10, 12, 30, 11]), View(False, None, False, 10)).tolist() == [10] * 4


def test_perfect_generator_labels_are_the_teachers_predictions(tmp_path):
    """The oracle row trains on held-out reals labelled by the teacher: its prediction for a scalar
    label (it once took the argmax of the one output, labelling every image 0), its argmax for classes."""
    from types import SimpleNamespace

    from rayflow.checkpoint import save_weights
    from rayflow.data.imageset import ImageSet, Splits
    from rayflow.models.io import WEIGHTS
    from rayflow.stages.graph import Node
    from rayflow.stages.supervised import job_fields

    save_weights({"w": torch.zeros(1)}, tmp_path / WEIGHTS)
    (tmp_path / "model.json").write_text('{"name": "mlp", "kwargs": {}, "in_channels": 1, "image_size": 8, '
                                         '"num_outputs": 1}')  # the online teacher's architecture
    teacher = SimpleNamespace(path=tmp_path, file=lambda name: tmp_path / name)
    v = {"teacher.model": None, "fake.kd_weight": 0.5, "fake.temperature": 4.0, "fake.real_fraction": 0.5}
    imgs = np.zeros((4, 1, 8, 8), np.uint8)
    for labels, out, want in ((np.array([0.1, 0.2, 0.3, 0.4], np.float32), np.array([[0.25], [0.5], [1.3], [-0.2]]),
                               [0.25, 0.5, 1.0, 0.0]),
                              (np.array([0, 1, 2, 0]), np.array([[0, 1, 0], [2, 0, 0], [0, 0, 3], [0, 5, 1.0]]),
                               [1, 0, 2, 1])):
        held = ImageSet(imgs, labels, None if labels.dtype == np.float32 else 3)
        runner = SimpleNamespace(splits=Splits(held, held, heldout=held),
                                 teacher_logits=lambda t, split, o=out: o.astype(np.float32))
        fields, _ = job_fields(runner, Node.of("oracle", seed=0), v, {"teacher": teacher})
        np.testing.assert_allclose(fields["fake"].labels, want, atol=1e-6)

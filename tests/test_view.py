"""Views of a scored pool select exactly what a filtering synth run over the same draws keeps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_synth import C, QUIET, cfg_, nets  # noqa: F401  (the tiny nets fixture)

from rayflow.synth import SynthError, run_synth
from rayflow.synth.manifest import Manifest
from rayflow.synth.view import View, ViewShortError, pool_index, read_view, select

pytestmark = pytest.mark.usefixtures("one_thread")


def _pool(nets, out, subsample=True):  # noqa: F811
    inputs = dataclasses.replace(nets, subsample=subsample, filter=False, relabel=False, pool=True)
    m = run_synth(inputs, cfg_(m_per_class=160), out, options=QUIET)
    return out, Manifest.load(out).burnin, m


@pytest.fixture(scope="module")
def pool(nets, tmp_path_factory):  # noqa: F811
    return _pool(nets, tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def raw_pool(nets, tmp_path_factory):  # noqa: F811
    return _pool(nets, tmp_path_factory.mktemp("raw_pool"), subsample=False)


def test_pool_keeps_every_draw_with_its_scores(pool):
    out, burnin, m = pool
    idx = pool_index([out])
    assert m["drawn_per_class"] == [160] * C and len(idx["sample_id"]) == 160 * C
    assert (np.diff(idx["sample_id"]) > 0).all()  # stable, unique ids in pool order
    assert 0 < idx["accepted"].mean() < 1 and np.isfinite(idx["teacher_ce"]).all()
    assert len(burnin["filter_ce"]) == C and all(sum(a) >= 40 for a in burnin["filter_accepted"])


@pytest.mark.parametrize("subsample,rho,relabel", [(True, 0.7, True), (True, 0.5, False), (False, 0.7, True),
                                                   (True, None, False), (False, None, False)])
def test_view_selects_what_the_synth_stage_keeps(pool, raw_pool, nets, subsample, rho, relabel):  # noqa: F811
    """The synth stage's per-shard steps with filtering inline (Generate -> Score -> Label with the
    cutoffs its own burn-in fixes), run over the pool's shards, keep exactly the view's rows."""
    from rayflow.synth.burnin import compute_burnin
    from rayflow.synth.io import sample_ids
    from rayflow.synth.udfs import Generate, Label, Score

    out, burnin, _ = pool if subsample else raw_pool  # a pool without a ratio net when cDR-RS is off
    cfg, m = cfg_(m_per_class=160), 20
    inputs = dataclasses.replace(nets, subsample=subsample, filter=rho is not None, rho=rho or 0.9, relabel=relabel)
    ref = compute_burnin(inputs, cfg)  # a filtering run's own burn-in: same draws, same rejection keys
    gen = Generate(nets.generator, nets.generator_state, batch_size=cfg.batch_size)
    score = Score(nets.feature_dir, nets.ratio_state, num_classes=C, ratio_hidden=(16, 16), max_ratio=ref.max_ratio,
                  seed=cfg.seed, batch_size=cfg.batch_size) if subsample else None
    label = Label(nets.teacher_dir, num_classes=C, cutoffs=ref.cutoffs, relabel=relabel, batch_size=cfg.batch_size)
    ids, labels = [], []
    for spec in Manifest.load(out).specs():
        b = gen({k: np.array([v]) for k, v in spec.item().items()})
        b = label(score(b) if score is not None else b)
        ids.append(sample_ids(b["shard_id"], b["draw"])[b["keep"]])
        labels.append(b["label"][b["keep"]])
        conds = b["orig_label"][b["keep"]]
        ids[-1], labels[-1] = ids[-1][np.argsort(ids[-1])], labels[-1][np.argsort(ids[-1])]
        assert (conds == spec.label).all()
    ids, labels = np.concatenate(ids), np.concatenate(labels)
    order = np.argsort(ids)
    ids, labels = ids[order], labels[order]
    cls = np.array([Manifest.load(out).records[int(i) // 2**24]["label"] for i in ids])
    want = np.sort(np.concatenate([np.flatnonzero(cls == c)[:m] for c in range(C)]))

    rows = select(pool_index([out]), burnin, View(subsample=subsample, rho=rho, relabel=relabel, m_per_class=m), C)
    np.testing.assert_array_equal(rows["sample_id"], ids[want])
    np.testing.assert_array_equal(rows["label"], labels[want])
    fs = read_view(rows["file"], rows["sample_id"], rows["label"])
    assert np.bincount(fs.orig_labels, minlength=C).tolist() == [m] * C
    assert (fs.labels == (fs.teacher_logits.argmax(1) if relabel else fs.orig_labels)).all()


def test_view_short_of_samples_says_which_classes(pool):
    out, burnin, _ = pool
    with pytest.raises(ViewShortError, match=r"class\(es\) \[0, 1, 2\]"):
        select(pool_index([out]), burnin, View(True, 0.5, True, m_per_class=10_000), C)
    with pytest.raises(SynthError, match="rho"):
        View(True, 1.5, True, 10)

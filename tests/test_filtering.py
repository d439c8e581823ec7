"""Teacher-based filtering: per-class (classification) and global (regression) quantile cutoffs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayflow.config import FilterConfig
from rayflow.filtering import (
    class_cutoffs,
    global_cutoff,
    keep_mask,
    quantile_cutoffs,
    relabel,
    soft_targets,
    teacher_ce,
)


def _shuffled_losses(num_classes=3, n=100, seed=0):
    """Class c holds the losses {0, ..., n-1} * 10**c in random order, interleaved across classes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n)
    ranks = np.concatenate([rng.permutation(n) for _ in range(num_classes)])
    losses = ranks * (10.0 ** labels)
    perm = rng.permutation(len(labels))
    return losses[perm], labels[perm], ranks[perm]


def test_per_class_filter_drops_exactly_the_worst():
    losses, labels, ranks = _shuffled_losses()
    rho = FilterConfig(rho=0.9).rho
    cut = class_cutoffs(losses, labels, rho, num_classes=3)
    assert cut.shape == (3,)
    keep = keep_mask(losses, labels, cut)
    # expected: the 90 smallest of each class (ranks 0..89), i.e. the 10 worst per class are gone
    expected = ranks < 90
    assert np.array_equal(keep, expected)
    for c in range(3):
        m = labels == c
        assert keep[m].sum() == 90
        assert losses[m & keep].max() < losses[m & ~keep].min()
    # a single global quantile would treat the classes very differently (scales 1, 10, 100)
    g = keep_mask(losses, None, global_cutoff(losses, rho))
    assert g[labels == 2].mean() < 0.9 < g[labels == 0].mean()


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.95])
def test_keep_fraction_is_rho_per_class(rho):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=8000)
    losses = rng.gamma(2.0, 1.0 + labels, size=8000)
    keep = keep_mask(losses, labels, class_cutoffs(losses, labels, rho, 4))
    for c in range(4):
        m = labels == c
        assert abs(keep[m].mean() - rho) <= 1.5 / m.sum() + 1e-12
        np.testing.assert_allclose(class_cutoffs(losses, labels, rho, 4)[c], np.quantile(losses[m], rho))


def test_tensor_inputs():
    losses, labels, ranks = _shuffled_losses()
    cut = class_cutoffs(torch.from_numpy(losses), torch.from_numpy(labels), 0.5, 3)
    keep = keep_mask(torch.from_numpy(losses), torch.from_numpy(labels), cut)
    assert isinstance(keep, np.ndarray) and keep.dtype == bool
    assert np.array_equal(keep, ranks <= 49)


def test_rho_one_keeps_all():
    losses, labels, _ = _shuffled_losses()
    assert keep_mask(losses, labels, class_cutoffs(losses, labels, 1.0, 3)).all()
    assert keep_mask(losses, None, global_cutoff(losses, 1.0)).all()


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.5, float("nan"), "abc"])
def test_bad_rho_raises(rho):
    losses, labels, _ = _shuffled_losses()
    with pytest.raises(ValueError, match="rho"):
        class_cutoffs(losses, labels, rho, 3)
    with pytest.raises(ValueError, match="rho"):
        global_cutoff(losses, rho)


def test_missing_class_is_a_clear_error():
    losses = np.arange(6.0)
    labels = np.array([0, 0, 2, 2, 0, 2])
    with pytest.raises(ValueError, match=r"class\(es\) \[1, 3\]"):
        class_cutoffs(losses, labels, 0.9, num_classes=4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        class_cutoffs(losses, labels, 0.9, num_classes=2)
    with pytest.raises(ValueError, match="NaN"):
        class_cutoffs(np.array([1.0, np.nan]), np.array([0, 0]), 0.9, 1)
    with pytest.raises(ValueError, match="labels"):
        keep_mask(losses, None, np.ones(3))


def test_global_regression_mode():
    rng = np.random.default_rng(2)
    y = rng.random(5000)
    pred = y + rng.normal(0, 0.1, size=5000)
    err = np.abs(pred - y)
    cut = global_cutoff(err, 0.7)
    assert isinstance(cut, float)
    assert cut == quantile_cutoffs(err, 0.7, per_class=False) == np.quantile(err, 0.7)
    keep = keep_mask(err, None, cut)
    assert abs(keep.mean() - 0.7) < 1e-3
    assert err[keep].max() <= cut < err[~keep].min()
    # labels are ignored in global mode
    assert quantile_cutoffs(err, 0.7, labels=y, per_class=False) == cut


def test_teacher_ce_relabel_soft_targets():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 0.1], [0.2, 0.1, 0.3]])
    labels = torch.tensor([0, 2, 2])
    ce = teacher_ce(logits, labels)
    assert ce.shape == (3,)
    torch.testing.assert_close(ce, -torch.log_softmax(logits, 1)[torch.arange(3), labels])
    assert ce[1] > ce[0]
    assert torch.equal(relabel(logits), torch.tensor([0, 1, 2]))
    assert np.array_equal(relabel(logits.numpy()), np.array([0, 1, 2]))
    p1, p4 = soft_targets(logits, 1.0), soft_targets(logits, 4.0)
    torch.testing.assert_close(p4.sum(1), torch.ones(3))
    torch.testing.assert_close(p1, torch.softmax(logits, 1))
    assert (p4.max(1).values < p1.max(1).values).all()  # higher T = flatter
    with pytest.raises(ValueError, match="T"):
        soft_targets(logits, 0.0)
    with pytest.raises(ValueError, match="teacher_ce"):
        teacher_ce(logits, labels[:2])

"""GAN quality without Inception weights: label consistency and FID in a feature space of our own.

No Inception network is available offline, so both metrics use the teacher trained on the same
real data: label consistency = the teacher sees the condition (argmax equals the class, or a
continuous prediction within half a stratum of the label); FID = Frechet
distance between teacher embeddings (pre-head features) of real and generated images.
Comparable across runs of this project, not with published FIDs. The same features carry
per-stratum precision / recall / density / coverage (`manifold_quality`, math in gan/manifold.py)
and the nearest real training image of each fake (`nearest_real_grid`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from rayflow.data.transforms import to_float


@torch.no_grad()
def _embed(model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    feats, logits = [], []
    for i in range(0, len(images_u8), batch_size):
        out, fs = model(to_float(images_u8[i:i + batch_size].clone()), return_features=True)
        logits.append(out.float())
        feats.append(fs[-1].flatten(1).float())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy().astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # rank-deficient covariances (few samples, ReLU features) are
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # normal here: the eps retry handles them
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            eps = 1e-6 * np.eye(len(s1))
            covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gan_quality(teacher: torch.nn.Module, fake_u8: torch.Tensor, fake_labels: torch.Tensor,
                real_u8: torch.Tensor | None = None, num_classes=None) -> dict:
    """label_consistency (%: the teacher sees the condition; see rayflow.labels), per stratum,
    label_mae for a continuous space, and FID vs `real_u8` if given. `num_classes`: a label space,
    a class count, or None for continuous labels."""
    from rayflow.labels import as_space

    space = as_space(num_classes if num_classes is not None or fake_labels.is_floating_point()
                     else int(fake_labels.max()) + 1)
    logits, feats = _embed(teacher, fake_u8)
    out_t = torch.from_numpy(logits)
    agree = space.agreement(out_t, fake_labels).numpy()
    strata = space.strata_of(fake_labels.numpy())
    out = {"label_consistency": 100.0 * float(agree.mean()),
           "label_consistency_per_class": [100.0 * float(agree[strata == c].mean()) if (strata == c).any() else None
                                           for c in range(space.num_strata)]}
    if space.continuous:
        out["label_mae"] = float(space.teacher_error(out_t, fake_labels).mean())
    if real_u8 is not None:
        _, real_feats = _embed(teacher, real_u8)
        out["fid_teacher_features"] = frechet_distance(real_feats, feats)
    return out


def paired_strata(fake_strata: np.ndarray, real_strata: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fake, real) indices: within each stratum of the fakes, as many of each as the smaller side
    has (seeded picks). Why equal numbers: precision and recall shift with the two sets' sizes."""
    rng = np.random.default_rng(seed)
    fi, ri = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(fake_strata):
        f, r = np.flatnonzero(fake_strata == c), np.flatnonzero(real_strata == c)
        n = min(len(f), len(r))
        fi.append(rng.permutation(f)[:n])
        ri.append(rng.permutation(r)[:n])
    return np.sort(np.concatenate(fi)), np.sort(np.concatenate(ri))


def manifold_quality(teacher: torch.nn.Module, fake_u8: torch.Tensor, fake_labels: torch.Tensor,
                     real_u8: np.ndarray, real_labels: np.ndarray, space, real_feats: np.ndarray | None = None) -> dict:
    """Per-stratum precision / recall / density / coverage (k = 5) of the fakes against held-out
    reals in teacher-feature space, their means over strata, and the number of samples per side
    in each stratum (`manifold_n_per_class`). `real_feats`: the teacher features of every
    `real_u8` row, when a caller measures several fake sets against the same reals (embedded once)."""
    from rayflow.gan.manifold import prdc_per_stratum
    from rayflow.labels import as_space

    space = as_space(space)
    f_strata, r_strata = space.strata_of(fake_labels.numpy()), space.strata_of(real_labels)
    fi, ri = paired_strata(f_strata, r_strata)
    if len(fi):
        f_feats = _embed(teacher, fake_u8[fi])[1]
        r_feats = real_feats[ri] if real_feats is not None else _embed(teacher, torch.as_tensor(real_u8[ri]))[1]
    else:  # no held-out real shares a stratum with the fakes: every value None
        f_feats = r_feats = np.zeros((0, 1))
    out = prdc_per_stratum(r_feats, r_strata[ri], f_feats, f_strata[fi], space.num_strata)
    out["manifold_n_per_class"] = np.bincount(f_strata[fi], minlength=space.num_strata).tolist()
    return out


def nearest_real_grid(teacher: torch.nn.Module, fake_u8: torch.Tensor, fake_labels: torch.Tensor,
                      train_u8: np.ndarray, space, path, per_stratum: int = 10, max_train: int = 20000) -> dict:
    """A PNG: per stratum, a row of fakes over a row of each one's nearest real training image (in
    teacher-feature space, what the student learns from), so a copy of a training image
    (memorisation) or the same neighbour again and again (collapse) is visible at a glance.
    Searches a seeded subset of `max_train` training images when there are more."""
    from rayflow.gan.grid import save_grid_png
    from rayflow.gan.manifold import nearest
    from rayflow.labels import as_space

    strata = as_space(space).strata_of(fake_labels.numpy())
    rows = []
    for c in np.unique(strata):  # evenly spread over the stratum (a continuous one: its label range)
        idx = np.flatnonzero(strata == c)
        rows.append(idx[np.unique(np.linspace(0, len(idx) - 1, min(per_stratum, len(idx))).round().astype(int))])
    shown = np.concatenate(rows)
    pool = np.sort(np.random.default_rng(0).permutation(len(train_u8))[:max_train])
    _, f_feats = _embed(teacher, fake_u8[shown])
    _, t_feats = _embed(teacher, torch.as_tensor(train_u8[pool]))
    near = pool[nearest(f_feats, t_feats)]
    fakes = fake_u8[shown].numpy()
    width = max(len(r) for r in rows)
    tiles, at = [], 0
    for r in rows:  # fakes, then their neighbours; short rows padded black
        pad = np.zeros((width - len(r), *fakes.shape[1:]), np.uint8)
        tiles += [fakes[at:at + len(r)], pad, train_u8[near[at:at + len(r)]], pad]
        at += len(r)
    save_grid_png(np.concatenate(tiles), path, nrow=width)
    return {"nearest_real_searched": int(len(pool))}

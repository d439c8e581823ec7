"""GAN quality without Inception weights: label consistency and FID in a feature space of our own.

No Inception network is available offline, so both metrics use the teacher trained on the same
real data: label consistency = the teacher sees the condition (argmax equals the class, or a
continuous prediction within half a stratum of the label); FID = Frechet
distance between teacher embeddings (pre-head features) of real and generated images.
Comparable across runs of this project, not with published FIDs.
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

"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) of a
fake sample set against real ones, from two feature matrices; plus nearest neighbours.

Why beside FID: FID folds fidelity and diversity into one number, while the fakes' use for
distillation hinges on diversity (Li et al. 2023). Each real point gets a ball reaching its k-th
nearest real neighbour (k = 5, Naeem's choice); precision = share of fakes inside some real ball,
density = fakes' mean count of real balls they fall in / k (≈ 1 for a fake set drawn like the
reals, above 1 where fakes crowd dense real regions), coverage = share of reals whose ball holds a
fake, recall = share of reals inside some fake ball (balls built among the fakes). A collapsed
generator keeps precision and loses recall and coverage.

Plain PyTorch, float64 on the CPU, pairwise distances in row chunks so 10k x 10k never holds a
full matrix; deterministic (no sampling). Squared distances are compared, features centred on
the reals' mean first so the matmul form loses little precision; every ball is widened by a
rounding margin (1e-9 of the squared scale), so a point exactly on a ball's edge (a set measured
against itself) counts inside whichever way the matmul rounded.
"""

from __future__ import annotations

import numpy as np
import torch

K = 5
_CHUNK_ELEMS = 1 << 23  # one chunk of the distance matrix: 8M float64 = 64 MB


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)


def _chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMS // max(1, n_cols))
    for i in range(0, n_rows, step):
        yield slice(i, min(i + step, n_rows))


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def knn_radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """Squared distance from each row to its k-th nearest other row (the row itself is 0th)."""
    x_sq = (x * x).sum(1)
    return torch.cat([_sq_dists(x[s], x, x_sq).topk(k + 1, dim=1, largest=False).values[:, k]
                      for s in _chunks(len(x), len(x))])


def prdc(real, fake, k: int = K) -> dict:
    """precision, recall, density, coverage of `fake` (M, D) against `real` (N, D); None each
    when either set has no more than k points (no k-th neighbour to size a ball with)."""
    if len(real) <= k or len(fake) <= k:
        return {"precision": None, "recall": None, "density": None, "coverage": None}
    real, fake = _t(real), _t(fake)
    mu = real.mean(0, keepdim=True)
    real, fake = real - mu, fake - mu
    real_sq, fake_sq = (real * real).sum(1), (fake * fake).sum(1)
    margin = 1e-9 * 2 * float(torch.cat([real_sq, fake_sq]).max())
    r_real, r_fake = knn_radii(real, k) + margin, knn_radii(fake, k) + margin
    inside = 0  # sum over fakes of how many real balls hold it
    precise = 0  # fakes inside at least one real ball
    for s in _chunks(len(fake), len(real)):
        hit = _sq_dists(fake[s], real, real_sq) <= r_real[None, :]
        inside += int(hit.sum())
        precise += int(hit.any(1).sum())
    recalled = covered = 0
    for s in _chunks(len(real), len(fake)):
        d = _sq_dists(real[s], fake, fake_sq)
        recalled += int((d <= r_fake[None, :]).any(1).sum())  # real inside some fake ball
        covered += int((d.min(1).values <= r_real[s]).sum())  # nearest fake inside the real's ball
    return {"precision": precise / len(fake), "recall": recalled / len(real),
            "density": inside / (k * len(fake)), "coverage": covered / len(real)}


def prdc_per_stratum(real, real_strata, fake, fake_strata, num_strata: int, k: int = K) -> dict:
    """The four metrics within each stratum (a class, or a slice of a continuous label), as
    `<name>_per_class` lists (None where a stratum has too few points), and their mean over the
    strata that have a value as `<name>`. Why per stratum: a class-conditional generator is
    judged on each condition; pooled, one class's fakes would count as another's diversity."""
    real, fake = np.asarray(real), np.asarray(fake)
    real_strata, fake_strata = np.asarray(real_strata), np.asarray(fake_strata)
    per = [prdc(real[real_strata == c], fake[fake_strata == c], k) for c in range(num_strata)]
    out: dict = {}
    for name in ("precision", "recall", "density", "coverage"):
        vals = [p[name] for p in per]
        ok = [v for v in vals if v is not None]
        out[name] = float(np.mean(ok)) if ok else None
        out[f"{name}_per_class"] = vals
    return out


def nearest(query, ref) -> np.ndarray:
    """Index into `ref` of each `query` row's nearest neighbour (Euclidean; ties: lowest index)."""
    query, ref = _t(query), _t(ref)
    mu = ref.mean(0, keepdim=True)
    query, ref = query - mu, ref - mu
    ref_sq = (ref * ref).sum(1)
    return torch.cat([_sq_dists(query[s], ref, ref_sq).argmin(1) for s in _chunks(len(query), len(ref))]).numpy()

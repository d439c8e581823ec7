"""CcGAN's vicinal discriminator losses (Ding et al., ICLR 2021 / T-PAMI 2023) for labels in [0, 1].

Why: with continuous labels most label values have zero or one real image, so D cannot estimate
p(x | y) from images with exactly label y. CcGAN lets every real image within a vicinity of a
target label y* count for y*:

* HVDL (hard): reals with |y_i - y*| <= kappa, all with weight 1 (picked uniformly);
* SVDL (soft): weight exp(-nu (y_i - y*)^2), nu = 1 / kappa^2, reals with weight < 1e-3 ignored.

One D step, exactly as ``train_ccgan.py`` (improved_CcGAN): centres c drawn uniformly from the
*distinct* train labels, y* = c + N(0, sigma^2) (epsilon redrawn while y*'s vicinity holds no real
label); one real image uniform among those in the vicinity; the fake's label uniform in the
vicinity, clipped to [0, 1]; D judges both at y*; the hinge terms are weighted as above. The G step
uses y* = c + N(0, sigma^2), here clipped to [0, 1] (the range the embeddings are trained on).

Rule of thumb (paper, ``main.py``): sigma = 1.06 std(y) n^(-1/5) (Silverman, population std over
all n train labels); kappa = m_kappa * max gap between sorted distinct labels.

All randomness comes from the global torch RNG, which ``train_gan`` reseeds every step, so a
resumed run draws the same vicinal batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rayflow.data.mapped import rows

SOFT_CUTOFF = 1e-3  # the paper's nonzero_soft_weight_threshold


@dataclass(frozen=True)
class Vicinity:
    """Resolved vicinity: `kind` "hard" | "soft", `kappa` (label units), `sigma` (target noise)."""

    kind: str
    kappa: float
    sigma: float
    cutoff: float = SOFT_CUTOFF

    def __post_init__(self) -> None:
        if self.kind not in ("hard", "soft"):
            raise ValueError(f"vicinal must be 'hard' or 'soft', got {self.kind!r}")
        if not (self.kappa > 0 and math.isfinite(self.kappa)):
            raise ValueError(f"kappa must be a positive number, got {self.kappa}")
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    @property
    def nu(self) -> float:
        """SVDL's weight decay: w = exp(-nu d^2)."""
        return 1.0 / self.kappa ** 2

    @property
    def radius(self) -> float:
        """Half-width of the label window holding every real with a nonzero weight."""
        return self.kappa if self.kind == "hard" else math.sqrt(-math.log(self.cutoff) / self.nu)


def rule_of_thumb(labels, kappa_mult: float = 2.0) -> tuple[float, float]:
    """(kappa, sigma) from the train labels: kappa = kappa_mult * max gap of the sorted distinct
    labels, sigma = 1.06 * std * n^(-1/5). kappa is NaN with fewer than two distinct labels."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise ValueError("rule of thumb needs at least one label")
    uniq = np.unique(y)
    kappa = float(kappa_mult * np.diff(uniq).max()) if uniq.size > 1 else float("nan")
    sigma = float(1.06 * y.std() * y.size ** (-1 / 5))
    return kappa, sigma


def resolve_vicinity(labels, cfg) -> Vicinity:
    """The Vicinity for a GANConfig: cfg.kappa / cfg.sigma when set, else the rule of thumb."""
    kappa, sigma = rule_of_thumb(labels, cfg.kappa_mult)
    if cfg.kappa is not None:
        kappa = cfg.kappa
    elif not math.isfinite(kappa):
        raise ValueError("all train labels are equal: the kappa rule of thumb is undefined, set gan.kappa")
    return Vicinity(cfg.vicinal, float(kappa), float(cfg.sigma if cfg.sigma is not None else sigma))


def vicinal_weights(y: Tensor, target: Tensor, vic: Vicinity) -> Tensor:
    """Weight of a sample with label `y` for target label `target` (broadcasting): hard = 1 inside
    |y - target| <= kappa, soft = exp(-nu (y - target)^2) where that is >= the 1e-3 cutoff; 0 outside."""
    d2 = (torch.as_tensor(y) - torch.as_tensor(target)) ** 2
    if vic.kind == "hard":
        return (d2 <= vic.kappa ** 2).to(d2.dtype)
    w = torch.exp(-vic.nu * d2)
    return torch.where(d2 <= -math.log(vic.cutoff) / vic.nu, w, torch.zeros_like(w))


class VicinalSampler:
    """The real training set as CcGAN's D step needs it. Also a plain ``SampleReal``:
    ``sampler(n)`` -> (uint8 images, float32 labels) uniformly (for probes and class-style code).

    `images`: uint8 (N, C, H, W) numpy array or tensor; `labels`: N floats in [0, 1].
    """

    max_redraws = 100

    def __init__(self, images, labels, vicinity: Vicinity):
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if len(y) != len(images) or len(y) == 0:
            raise ValueError(f"{len(images)} images but {len(y)} labels")
        if not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
            raise ValueError("CcGAN labels must be finite and normalised to [0, 1]")
        self.images, self.vicinity = images, vicinity
        order = np.argsort(y, kind="stable")
        self._order = torch.from_numpy(order)
        self._sorted = torch.from_numpy(y[order])
        self._labels32 = torch.from_numpy(y.astype(np.float32))
        self._unique = torch.unique(self._sorted)

    @classmethod
    def from_config(cls, images, labels, cfg) -> "VicinalSampler":
        return cls(images, labels, resolve_vicinity(labels, cfg))

    def __len__(self) -> int:
        return len(self._order)

    def _take(self, idx: Tensor):
        if isinstance(self.images, np.ndarray):
            return torch.from_numpy(rows(self.images, idx.numpy()))
        return torch.as_tensor(self.images)[idx]

    def __call__(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self), (n,))
        return self._take(idx), self._labels32[idx]

    def centres(self, n: int) -> Tensor:
        """n labels drawn uniformly from the distinct train labels (float64)."""
        return self._unique[torch.randint(0, len(self._unique), (n,))]

    def targets(self, n: int) -> Tensor:
        """G-step labels: centre + N(0, sigma^2), clipped to [0, 1] (float32)."""
        c = self.centres(n)
        return (c + self.vicinity.sigma * torch.randn(n, dtype=torch.float64)).clamp(0.0, 1.0).float()

    def _window(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r = self.vicinity.radius
        return (torch.searchsorted(self._sorted, t - r, side="left"),
                torch.searchsorted(self._sorted, t + r, side="right"))

    def d_batch(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(real uint8 images, their labels, target labels y*, fake labels), labels float32 (n,)."""
        vic = self.vicinity
        c = self.centres(n)
        t = c + vic.sigma * torch.randn(n, dtype=torch.float64)
        lo, hi = self._window(t)
        for _ in range(self.max_redraws):
            empty = hi <= lo
            if not empty.any():
                break
            t[empty] = c[empty] + vic.sigma * torch.randn(int(empty.sum()), dtype=torch.float64)
            lo, hi = self._window(t)
        else:  # a centre is a train label, so its own vicinity is never empty
            t = torch.where(hi <= lo, c, t)
            lo, hi = self._window(t)
        pick = torch.minimum(lo + (torch.rand(n, dtype=torch.float64) * (hi - lo)).long(), hi - 1)
        idx = self._order[pick]
        lb = (t - vic.radius).clamp(0.0, 1.0)
        ub = (t + vic.radius).clamp(0.0, 1.0)
        y_fake = lb + torch.rand(n, dtype=torch.float64) * (ub - lb)
        return self._take(idx), self._labels32[idx], t.float(), y_fake.float()


__all__ = ["SOFT_CUTOFF", "VicinalSampler", "Vicinity", "resolve_vicinity", "rule_of_thumb", "vicinal_weights"]

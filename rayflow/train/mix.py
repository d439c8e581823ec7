"""MixUp / CutMix of a batch, labelled by the teacher on the mixed view itself (function matching).

The one mixing code path: the function-matching baseline (real images only) and the cGAN-KD mixing
lever (batches of real and fake images; partners drawn from the whole batch, so real-fake,
fake-fake and real-real pairs all occur). Why the teacher labels the mixed image rather than
mixing two labels: function matching (Beyer et al. 2022) asks the student to match the teacher's
function on the very view it sees; a mix of two teacher outputs is not the teacher's output on the
mix. Targets go through the label space (`teacher_label`): the argmax class, or for regression
the teacher's predicted value, with no task-specific branch here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rayflow.config_mix import MixConfig
from rayflow.labels import LabelSpace
from rayflow.seeding import step_seed

MIX_STREAM = 0x6D6978  # a seed part of its own: the mixing draws never repeat the augmentation's


def mix_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The draws of step `step` (a resumed run mixes as the uninterrupted one did)."""
    return np.random.default_rng(step_seed(seed, rank, step, MIX_STREAM))


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box of (1 - lam) * h * w pixels up to rounding, placed at random inside
    the image (not clipped at a border, so the pasted share is the drawn one)."""
    r = np.sqrt(1.0 - lam)
    bh, bw = int(round(h * r)), int(round(w * r))
    y0, x0 = int(rng.integers(h - bh + 1)), int(rng.integers(w - bw + 1))
    return y0, y0 + bh, x0, x0 + bw


def mix_images(x: torch.Tensor, cfg: MixConfig, rng: np.random.Generator) -> tuple[torch.Tensor, float, str]:
    """(mixed images, lambda = the first image's share of the pixels, kind used); each image i is
    mixed with image perm[i] of the same batch, one lambda per batch."""
    kind = cfg.kind if cfg.kind != "both" else ("mixup" if rng.random() < 0.5 else "cutmix")
    lam = float(rng.beta(cfg.alpha, cfg.alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if kind == "mixup":
        return lam * x + (1.0 - lam) * x[perm], lam, kind
    if kind != "cutmix":
        raise ValueError(f"unknown mixing {cfg.kind!r} (known: mixup, cutmix, both)")
    h, w = x.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, lam, rng)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w), kind


@torch.no_grad()
def mix_batch(b: dict, teacher: nn.Module, space: LabelSpace, cfg: MixConfig,
              rng: np.random.Generator) -> dict:
    """`b` with its images mixed and, for every row, the teacher's output on the mixed image as the
    KD target `t` and its label (`space.teacher_label`) as `y`. Other keys (CRD's `i`) are kept:
    the row stays the first image's."""
    x, _, _ = mix_images(b["x"], cfg, rng)
    t = teacher(x).float()
    out = type(b)(b)
    out.update(x=x, t=t, y=space.teacher_label(t).to(b["y"].dtype))
    return out

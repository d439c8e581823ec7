"""DiffAugment (Zhao et al., 2020): random, differentiable augmentations applied to *both* real
and fake images before D, so D cannot memorise a small real set while G still gets gradients.

Port of the authors' PyTorch ops (color = brightness/saturation/contrast, translation by up to
1/8 of the side with zero padding, one cutout square of 1/2 the side). Every op draws its random
numbers per sample from the global torch RNG; images are expected in [-1, 1] (zero = mid grey).
Saturation is a no-op on 1-channel images (the channel mean equals the pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _rand(x: Tensor) -> Tensor:
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def rand_brightness(x: Tensor) -> Tensor:
    return x + (_rand(x) - 0.5)


def rand_saturation(x: Tensor) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x) * 2) + mean


def rand_contrast(x: Tensor) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean


def rand_translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    n, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, size=(n, 1, 1), device=x.device)
    ty = torch.randint(-sy, sy + 1, size=(n, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device), torch.arange(h, device=x.device),
        torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1])
    return x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def rand_cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), size=(n, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), size=(n, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


AUGMENT_FNS = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}


def diff_augment(x: Tensor, policy: str = "color,translation,cutout") -> Tensor:
    """Apply the comma-separated ops of `policy` in order ('' = identity); shape is preserved."""
    for name in [p.strip() for p in policy.split(",") if p.strip()]:
        if name not in AUGMENT_FNS:
            raise ValueError(f"unknown DiffAugment op {name!r}; choose from {sorted(AUGMENT_FNS)}")
        for fn in AUGMENT_FNS[name]:
            x = fn(x)
    return x

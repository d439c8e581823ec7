"""Batched augmentation in plain torch (no torchvision: its wheel drags in a CUDA torch here)."""

from __future__ import annotations

import torch


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the GAN's tanh output lives in."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample translation by up to `pad` px (zero padding = -1 after to_float)."""
    n, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, g: torch.Generator | None = None) -> torch.Tensor:
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=g).to(x.device)
    cx = torch.randint(0, w, (n,), generator=g).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = ((ys - cy[:, None, None]).abs() <= size // 2) & ((xs - cx[:, None, None]).abs() <= size // 2)
    return x.masked_fill(hole[:, None], 0.0)


def augment(x: torch.Tensor, ops: list[str], g: torch.Generator | None = None) -> torch.Tensor:
    h = x.shape[-1]
    for op in ops:
        if op == "crop":
            x = random_crop(x, max(1, h // 14), g)
        elif op == "flip":
            x = random_flip(x, g)
        elif op == "cutout":
            x = cutout(x, max(2, h // 3), g)
        else:
            raise ValueError(f"unknown augmentation {op!r} (known: crop, flip, cutout)")
    return x

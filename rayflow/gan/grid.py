"""Sample grids as PNG with PIL (no torchvision), written atomically so a killed job never
leaves a truncated image where a dashboard or artifact listing expects a finished one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rayflow.atomic import atomic_file


def make_grid(images: np.ndarray, nrow: int, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) uint8 -> (rows*(H+p)+p, nrow*(W+p)+p, C) uint8, row-major, black padding."""
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n)) if n else 1
    rows = max(1, -(-n // nrow))
    out = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + k * (w + padding)
        out[y0:y0 + h, x0:x0 + w] = images[i].transpose(1, 2, 0)
    return out


def save_grid_png(images_uint8, path: str | os.PathLike, nrow: int = 10, padding: int = 2) -> Path:
    """Save uint8 images (N, C, H, W), C in {1, 3}, as one PNG grid; returns the path."""
    arr = images_uint8.detach().cpu().numpy() if isinstance(images_uint8, torch.Tensor) else np.asarray(images_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, C, H, W) with C in (1, 3), got {arr.dtype} {arr.shape}")
    grid = make_grid(arr, nrow, padding)
    img = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    path = Path(path)
    with atomic_file(path) as tmp:
        img.save(tmp, format="PNG")
    return path

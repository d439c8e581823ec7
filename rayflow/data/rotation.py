"""Rotation-angle regression on real images (`data.name: rotation`): each real image is turned by
known random angles and the label is the angle, the same task as RC-49 (yaw) on real pictures.

No image regression set with a natural label ships offline (reference/data_offline.md 2a); an
angle is an exactly known label. Steps: centre the image on a canvas of ceil(side * sqrt 2) px so
its corners survive any turn, turn it counter-clockwise (as displayed) with a bilinear affine grid
(pure torch, no torchvision), resize back to the output size (antialiased). Angle 0 is exactly
`pad_and_resize` of the original. Train and test come from the base set's own train/test split,
so no source image is in both.

Left out by default: Fashion-MNIST bags (class 8), near-square, so a bag turned by theta and by
theta + 90 look alike and the label is ambiguous. No other Fashion-MNIST class (nor any digit)
looks the same after a 90-degree turn; within [0, 90) a 180-degree symmetry does no harm.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rayflow.config import DataConfig, RotationConfig
from rayflow.data.imageset import DataError, ImageSet
from rayflow.data.labels import LabelRange

DEFAULT_EXCLUDE = {"fashion_mnist": [8], "digits": []}
_CHUNK = 2048  # images per torch call: bounds the float canvas memory (2048 x 40 x 40 x 4 B = 13 MB)


def settings(cfg: DataConfig) -> RotationConfig:
    return cfg.rotation or RotationConfig()


def rotation_range(cfg: DataConfig) -> LabelRange:
    lo, hi = settings(cfg).angle_range
    return LabelRange(lo, hi, "deg", source=f"rotation ({settings(cfg).base})")


def canvas_size(side: int, pad_to: int | None = None) -> int:
    """The padded side: the image's diagonal (28 -> 40), so no turn cuts a corner."""
    return pad_to or math.ceil(side * math.sqrt(2) - 1e-9)


def _pad(x: torch.Tensor, canvas: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if canvas < max(h, w):
        raise DataError(f"rotation.pad_to={canvas} is smaller than the {h}x{w} images")
    ph, pw = canvas - h, canvas - w
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.round().clamp_(0, 255).to(torch.uint8).numpy()


def pad_and_resize(images: np.ndarray, size: int, pad_to: int | None = None) -> np.ndarray:
    """uint8 (N, C, H, W) -> centred on the canvas, resized to size x size: the angle-0 image."""
    out = []
    for i in range(0, len(images), _CHUNK):
        x = torch.from_numpy(images[i:i + _CHUNK]).float()
        out.append(_to_uint8(_resize(_pad(x, canvas_size(x.shape[-1], pad_to)), size)))
    return np.concatenate(out) if out else np.zeros((0, images.shape[1], size, size), np.uint8)


def rotate(images: np.ndarray, angles_deg: np.ndarray, size: int, pad_to: int | None = None) -> np.ndarray:
    """uint8 (N, C, H, W), angles (N,) in degrees -> uint8 (N, C, size, size), each image padded,
    turned counter-clockwise by its angle and resized. Deterministic (no randomness inside)."""
    if len(images) != len(angles_deg):
        raise ValueError(f"{len(images)} images but {len(angles_deg)} angles")
    out = []
    for i in range(0, len(images), _CHUNK):
        x = _pad(torch.from_numpy(images[i:i + _CHUNK]).float(), canvas_size(images.shape[-1], pad_to))
        t = torch.from_numpy(np.deg2rad(np.asarray(angles_deg[i:i + _CHUNK], np.float64)))
        cos, sin = torch.cos(t), torch.sin(t)
        # affine_grid maps output to input coordinates (x right, y down): sampling at R(theta)^-1
        # in screen coordinates turns the content counter-clockwise as displayed
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(t)], 1),
                             torch.stack([sin, cos, torch.zeros_like(t)], 1)], 1).float()
        turn = t != 0  # angle 0 stays bit-exact (grid_sample's identity is off by float rounding)
        if turn.any():
            grid = F.affine_grid(theta[turn], [int(turn.sum()), *x.shape[1:]], align_corners=False)
            x[turn] = F.grid_sample(x[turn], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(_to_uint8(_resize(x, size)))
    return np.concatenate(out) if out else np.zeros((0, images.shape[1], size, size), np.uint8)


def _base(cfg: DataConfig) -> tuple[ImageSet, ImageSet, str]:
    from rayflow.data import sources, splits

    base = settings(cfg).base
    if base == "fashion_mnist":
        train, test = sources.load_fashion_mnist()
    else:  # 8x8 carries too little angle signal: nearest x2 to 16x16 first (reference 2a)
        train, test = (splits.upscale(s, 16) for s in sources.load_digits(seed=cfg.seed))
    return train, test, base


def _keep(s: ImageSet, exclude: list[int], base: str) -> ImageSet:
    bad = [c for c in exclude if not 0 <= c < (s.num_classes or 0)]
    if bad:
        raise DataError(f"rotation.exclude_classes: {bad} are not classes of {base} (0..{s.num_classes - 1})")
    return s.subset(~np.isin(s.labels, exclude))


def make_rotated(s: ImageSet, k: int, lr: LabelRange, size: int, pad_to: int | None,
                 rng: np.random.Generator, where: str) -> ImageSet:
    """Each image of `s` turned by `k` angles ~ U[lo, hi) -> regression ImageSet (labels in [0, 1])."""
    src = np.repeat(s.images, k, axis=0)  # image i's k versions are rows i*k .. i*k + k - 1
    angles = rng.uniform(lr.lo, lr.hi, len(src))
    angles = np.minimum(angles, np.nextafter(lr.hi, lr.lo))  # [lo, hi): hi itself never drawn
    return ImageSet(rotate(src, angles, size, pad_to), lr.normalise(angles, where), None)


def load_rotation(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, test) of rotated real images; labels are angles normalised to [0, 1]."""
    rc = settings(cfg)
    train, test, base = _base(cfg)
    exclude = DEFAULT_EXCLUDE[base] if rc.exclude_classes is None else list(rc.exclude_classes)
    train, test = _keep(train, exclude, base), _keep(test, exclude, base)
    size = cfg.image_size or train.shape[-1]
    lr = rotation_range(cfg)
    # separate seeded streams for train and test angles: changing k for one leaves the other alone
    rng_train = np.random.default_rng([cfg.seed, 7001])
    rng_test = np.random.default_rng([cfg.seed, 7002])
    return (make_rotated(train, rc.angles_per_image, lr, size, rc.pad_to, rng_train, f"rotation ({base} train)"),
            make_rotated(test, rc.test_angles_per_image, lr, size, rc.pad_to, rng_test, f"rotation ({base} test)"))

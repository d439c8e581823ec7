"""The one in-memory container every stage passes around: uint8 images + labels.

`as_images` and `labelled` turn a user's arrays into one, or into a DataError that names the
source and the problem (dtype, range, channels, label gaps), before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class DataError(ValueError):
    """A problem with the input data, phrased for the user."""


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W); labels int64 class ids or float32 values (regression).

    uint8 keeps 60k Fashion-MNIST images at 47 MB, cheap to ship to Ray workers and to Parquet.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int | None = None  # None for regression

    def __post_init__(self) -> None:
        self.validate()

    @property
    def task(self) -> str:
        return "regression" if self.num_classes is None else "classification"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, name: str = "dataset") -> None:
        x, y = self.images, self.labels
        if x.ndim != 4:
            raise DataError(f"{name}: images must have shape (N, C, H, W), got {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{name}: images must be uint8, got {x.dtype}")
        if x.shape[1] not in (1, 3):
            raise DataError(f"{name}: images need 1 or 3 channels, got {x.shape[1]} (shape {x.shape})")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{name}: {len(x)} images but labels of shape {y.shape}")
        if self.num_classes is None:
            if not np.issubdtype(y.dtype, np.floating):
                self.labels = y.astype(np.float32)
            return
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{name}: classification labels must be integers, got {y.dtype}")
        bad = (y < 0) | (y >= self.num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{name}: label {int(y[i])} at index {i} is out of range for {self.num_classes} classes "
                f"(valid: 0..{self.num_classes - 1})")
        self.labels = y.astype(np.int64, copy=False)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        """Rows `idx` (a mask or indices); a large subset of a memory-mapped set stays mapped."""
        from rayflow.data.mapped import take

        return ImageSet(take(self.images, idx), self.labels[idx], self.num_classes)

    def to_tensors(self):
        """(float images in [-1, 1], labels) as torch tensors, the form the networks see."""
        import torch

        from rayflow.data.transforms import to_float

        return to_float(torch.from_numpy(self.images.copy())), torch.from_numpy(self.labels.copy())

    def class_counts(self) -> np.ndarray:
        assert self.num_classes is not None
        return np.bincount(self.labels, minlength=self.num_classes)


@dataclass
class Splits:
    """train (possibly limited-label), val, test and an optional held-out real pool.

    `class_names`: one name per class id (folder names, Fashion-MNIST's names, "0".."9" for digits,
    str(id) for arrays); None for regression. `label_range`: the LabelRange the regression labels
    were normalised with (None: labels used as given, in [0, 1])."""

    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None
    heldout: ImageSet | None = None
    class_names: list[str] | None = None
    label_range: Any = None  # rayflow.data.labels.LabelRange (that module imports this one)

    @property
    def num_classes(self) -> int | None:
        return self.train.num_classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    def summary(self) -> str:
        parts = [f"train {len(self.train)}"]
        for k in ("val", "heldout"):
            s = getattr(self, k)
            if s is not None and len(s):
                parts.append(f"{k} {len(s)}")
        parts.append(f"test {len(self.test)}")
        c, h, w = self.shape
        return f"{', '.join(parts)} images of {c}x{h}x{w}"


# -- images ----------------------------------------------------------------------------------

_IMAGE_RULE = "images must be uint8 (0..255) or float in [0, 1]"


def as_images(x: np.ndarray, where: str) -> np.ndarray:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) -> uint8 (N,C,H,W) with 1 or 3 channels, or DataError."""
    shape = x.shape
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 2, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise DataError(f"{where}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {shape}")
    c = x.shape[1]
    if c not in (1, 3):
        kind = {2: " (grayscale + alpha)", 4: " (RGBA)"}.get(c, "")
        raise DataError(f"{where}: images have {c} channels{kind}, shape {shape}; rayflow supports 1 "
                        f"(grayscale) or 3 (RGB) channels{', drop the alpha channel' if kind else ''}")
    return np.ascontiguousarray(_to_uint8(x, where))


def _to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """Only lossless conversions: float in [0, 1] is scaled by 255, integers must already be 0..255.
    Anything else (float 0..255, 16-bit) would be silently clipped into a different image."""
    if x.dtype == np.uint8 or x.size == 0:
        return x.astype(np.uint8, copy=False)
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{where}: images hold NaN or infinite values ({_IMAGE_RULE})")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: {x.dtype} images have values in [{lo:.4g}, {hi:.4g}]; {_IMAGE_RULE}")
        return np.rint(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: {x.dtype} images have values in [{lo}, {hi}]; {_IMAGE_RULE}")
        return x.astype(np.uint8)
    raise DataError(f"{where}: images of dtype {x.dtype} are not supported; {_IMAGE_RULE}")


# -- labels ----------------------------------------------------------------------------------


def _runs(values) -> str:
    """[0, 1, 2, 9] -> '0..2, 9': label sets stay one short line even with 100 classes."""
    groups: list[list[int]] = []
    for v in sorted(int(v) for v in values):
        if groups and v == groups[-1][-1] + 1:
            groups[-1].append(v)
        else:
            groups.append([v])
    return ", ".join(f"{g[0]}..{g[-1]}" if len(g) > 2 else ", ".join(map(str, g)) for g in groups)


def _class_ids(y: np.ndarray, where: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise DataError(f"{where}: classification labels hold NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: classification labels must be integers, got {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is out of range (labels must be >= 0)")
    return y.astype(np.int64)


def _check_range(y: np.ndarray, k: int, where: str, limit: str = "") -> None:
    bad = np.flatnonzero(y >= k)
    if len(bad):
        raise DataError(f"{where}: label {int(y[bad[0]])} at index {int(bad[0])} is out of range for "
                        f"{limit or f'{k} classes'} (valid: 0..{k - 1})")


def _num_classes(y: np.ndarray, num_classes: int | None, where: str) -> int:
    """Training labels must be 0..K-1, each present: a gap would train a class with no images."""
    if num_classes is not None:
        _check_range(y, num_classes, where, f"data.num_classes={num_classes}")
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{where}: classification needs at least 2 classes, found labels {{{_runs(present)}}}")
    k = num_classes or int(present[-1]) + 1
    missing = np.setdiff1d(np.arange(k), present)
    if len(missing) and num_classes is not None:
        raise DataError(f"{where}: data.num_classes={num_classes} but the labels are {{{_runs(present)}}}; "
                        f"classes {_runs(missing)} have no images")
    if len(missing):
        raise DataError(f"{where}: labels must be 0..K-1 without gaps; found {{{_runs(present)}}}, "
                        f"missing {_runs(missing)}")
    return k


def labelled(x: np.ndarray, y: np.ndarray, task: str, num_classes: int | None, where: str,
             is_test: bool = False) -> ImageSet:
    """Checked labels for images `x`; test labels only need to fit the train split's classes."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but labels of shape {y.shape}")
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{where}: regression labels must be numbers, got {y.dtype}")
        if not np.isfinite(y).all():
            raise DataError(f"{where}: regression labels hold NaN or infinite values")
        return ImageSet(x, y.astype(np.float32), None)
    y = _class_ids(y, where)
    if is_test:
        _check_range(y, num_classes, where)
        return ImageSet(x, y, num_classes)
    return ImageSet(x, y, _num_classes(y, num_classes, where))

"""The one in-memory container every stage passes around: uint8 images + labels."""

from __future__ import annotations

from dataclasses import dataclass

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
        return ImageSet(self.images[idx], self.labels[idx], self.num_classes)

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
    """train (possibly limited-label), val, test and an optional held-out real pool."""

    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None
    heldout: ImageSet | None = None

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

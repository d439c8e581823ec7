"""Real image data: sources (Fashion-MNIST, digits, user files), limited-label splits, transforms."""

from rayflow.data.imageset import DataError, ImageSet, Splits
from rayflow.data.splits import load_splits

__all__ = ["DataError", "ImageSet", "Splits", "load_splits"]

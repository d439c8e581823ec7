"""Real image data: sources (Fashion-MNIST, digits, user files), limited-label splits, transforms."""

from rayflow.data.imageset import DataError, ImageSet, Splits
from rayflow.data.labels import LabelRange, label_range
from rayflow.data.splits import load_splits

__all__ = ["DataError", "ImageSet", "LabelRange", "Splits", "label_range", "load_splits"]

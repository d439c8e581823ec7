"""Regression labels: the data layer keeps them normalised to [0, 1] (what every network sees, as in
the cGAN-KD code's y_norm) and `LabelRange` maps them back to the original unit for reports.

A label outside the configured range, or NaN, is a broken input, not something to clip: `check`
raises one DataError naming the source and the offending value.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from rayflow.data.imageset import DataError


@dataclass(frozen=True)
class LabelRange:
    """Labels live in [lo, hi] in `unit` (e.g. 0..90 deg); y01 = (y - lo) / (hi - lo)."""

    lo: float
    hi: float
    unit: str = ""
    source: str = "labels"  # named in error messages (a file, or a data set such as 'rotation')

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise DataError(f"{self.source}: label range must have lo < hi, got [{self.lo}, {self.hi}]")

    @property
    def span(self) -> float:
        return float(self.hi - self.lo)

    def to_unit(self, y01):
        """Normalised [0, 1] -> original unit (numpy arrays, torch tensors or floats)."""
        return y01 * self.span + self.lo

    def from_unit(self, y):
        """Original unit -> normalised [0, 1]."""
        return (y - self.lo) / self.span

    def check(self, y, where: str | None = None) -> np.ndarray:
        """`y` (original unit) as float64, or DataError naming the source and the first bad value."""
        a = np.asarray(y, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(a) | (a < self.lo) | (a > self.hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "is NaN" if np.isnan(a[i]) else "is not finite" if not np.isfinite(a[i]) else \
                f"is outside the label range [{self.lo:g}, {self.hi:g}]{' ' + self.unit if self.unit else ''}"
            raise DataError(f"{where or self.source}: label {a[i]:g} at index {i} {what} "
                            f"({int(bad.sum())} bad label(s) in all)")
        return a

    def normalise(self, y, where: str | None = None) -> np.ndarray:
        """Checked labels in the original unit -> float32 in [0, 1], the form ImageSet stores."""
        return self.from_unit(self.check(y, where)).astype(np.float32)

    def describe(self) -> str:
        return f"[{self.lo:g}, {self.hi:g}]{' ' + self.unit if self.unit else ''}"


def label_range(cfg) -> LabelRange | None:
    """The original label unit of a regression set (`DataConfig`), for normalising labels and
    reporting MAE in that unit instead of in [0, 1]; None for classification and for user labels
    already in [0, 1] (used as they are, as before `data.label_range` existed)."""
    if cfg.name == "rotation":
        from rayflow.data.rotation import rotation_range

        return rotation_range(cfg)
    if cfg.name == "chairs":
        from rayflow.data.chairs import yaw_range

        return yaw_range(cfg)
    if cfg.task == "regression" and cfg.name in ("npz", "parquet"):
        return user_range(cfg)
    return None


def user_range(cfg) -> LabelRange | None:
    """`data.label_range` when declared, else [min, max] of the file's training labels when any of
    them lies outside [0, 1]. The file's labels, not a split's: the driver, a Tune trial and the
    report all derive the same range from the same file."""
    unit = cfg.label_unit or "units"
    if cfg.label_range is not None:
        return LabelRange(*cfg.label_range, unit, source=f"{cfg.path} (data.label_range)")
    lo, hi = _file_label_extent(cfg.name, cfg.path)
    if 0.0 <= lo and hi <= 1.0:
        return None
    if not lo < hi:
        raise DataError(f"{cfg.path}: every regression label is {lo:g}; there is nothing to learn")
    return LabelRange(lo, hi, unit, source=f"{cfg.path} (training labels)")


@functools.lru_cache(maxsize=8)
def _extent(name: str, path: str, stamp: tuple[int, int]) -> tuple[float, float]:
    from rayflow.data import sources

    y = sources.read_labels(name, path)  # the extent of the float32 labels ImageSet keeps
    if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all() or not y.size:
        raise DataError(f"{path}: regression labels must be finite numbers")
    y = y.astype(np.float32)
    return float(y.min()), float(y.max())


def _file_label_extent(name: str, path: str | None) -> tuple[float, float]:
    if path is None:
        raise DataError(f"data.path is required for data.name={name!r}")
    try:
        st = os.stat(path)
    except OSError:
        raise DataError(f"{name} path not found: {path}") from None
    return _extent(name, path, (st.st_mtime_ns, st.st_size))

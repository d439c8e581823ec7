"""Regression labels: the data layer keeps them normalised to [0, 1] (what every network sees, as in
the cGAN-KD code's y_norm) and `LabelRange` maps them back to the original unit for reports.

A label outside the configured range, or NaN, is a broken input, not something to clip: `check`
raises one DataError naming the source and the offending value.
"""

from __future__ import annotations

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
    """The original label unit of a built-in regression set (`DataConfig`), for reporting MAE in
    degrees instead of in [0, 1]; None for classification and for user files (already in their unit)."""
    if cfg.name == "rotation":
        from rayflow.data.rotation import rotation_range

        return rotation_range(cfg)
    if cfg.name == "chairs":
        from rayflow.data.chairs import yaw_range

        return yaw_range(cfg)
    return None

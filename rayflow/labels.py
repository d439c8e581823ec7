"""The label space: the one object that says how classification and regression differ.

Everything downstream of the data (GAN probes and selection, synthesis planning, filtering,
relabelling, the Parquet schema, reports) asks it instead of checking `num_classes`. A *stratum*
generalises a class: the class itself, or one of `bins` equal slices of a continuous [0, 1] label.
Per-stratum work (burn-in, draw planning, per-stratum shares) then reads the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rayflow.data.labels import LabelRange


@dataclass(frozen=True)
class Classes:
    """`num_classes` class ids 0..C-1; each class is its own stratum."""

    num_classes: int
    kind: str = "classes"

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    @property
    def num_strata(self) -> int:
        return self.num_classes

    @property
    def continuous(self) -> bool:
        return False

    def strata_of(self, labels) -> np.ndarray:
        return np.asarray(labels, np.int64)

    def grid(self, per_stratum: int) -> torch.Tensor:
        """Conditioning labels, stratum after stratum (sample grids, probes, BN recalibration)."""
        return torch.arange(self.num_classes).repeat_interleave(per_stratum)

    def teacher_error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample disagreement of the teacher with a label: the filter's score."""
        return F.cross_entropy(out.float(), y.long(), reduction="none")

    def teacher_label(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(1)

    def agreement(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample "does the teacher see the condition": 1/0 (label consistency)."""
        return (out.argmax(1) == y.long()).float()

    def display(self, y):
        return y

    def display_error(self, e):
        return e


@dataclass(frozen=True)
class Continuous:
    """A scalar label normalised to [0, 1]; `bins` equal strata; `range` maps back to the unit."""

    range: LabelRange | None = None
    bins: int = 10
    kind: str = "continuous"

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def num_strata(self) -> int:
        return self.bins

    @property
    def continuous(self) -> bool:
        return True

    def strata_of(self, labels) -> np.ndarray:
        y = np.asarray(labels, np.float64)
        return np.clip(np.floor(y * self.bins), 0, self.bins - 1).astype(np.int64)

    def grid(self, per_stratum: int) -> torch.Tensor:
        """`per_stratum` evenly spaced labels inside each stratum (centred, never on a border)."""
        k = torch.arange(self.bins).repeat_interleave(per_stratum).float()
        j = torch.arange(per_stratum).repeat(self.bins).float()
        return (k + (j + 0.5) / per_stratum) / self.bins

    def teacher_error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.float().reshape(len(y), -1)[:, 0] - y.float()).abs()

    def teacher_label(self, out: torch.Tensor) -> torch.Tensor:
        return out.float().reshape(len(out), -1)[:, 0].clamp(0.0, 1.0)

    @property
    def tolerance(self) -> float:
        """Half a stratum: the teacher "agrees" with a condition it predicts within this."""
        return 0.5 / self.bins

    def agreement(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """1/0: the teacher's prediction is within `tolerance` of the condition. Why this and not
        the error itself: "label consistency" (higher is better, a share in %) then means the same
        for both spaces, and checkpoint selection and its floor work unchanged."""
        return (self.teacher_error(out, y) <= self.tolerance).float()

    def display(self, y):
        """Normalised labels -> the original unit."""
        return y if self.range is None else self.range.to_unit(y)

    def display_error(self, e):
        """An error in normalised units -> the original unit."""
        return e if self.range is None else e * self.range.span


LabelSpace = Classes | Continuous


def space_of(num_classes: int | None, label_range: LabelRange | None = None, bins: int = 10) -> LabelSpace:
    """Classes when the data has class ids, else a continuous space over `label_range`."""
    return Classes(num_classes) if num_classes is not None else Continuous(label_range, bins)


def as_space(x: LabelSpace | int | None) -> LabelSpace:
    """A label space from a space, a class count, or None (continuous, normalised units)."""
    if isinstance(x, (Classes, Continuous)):
        return x
    return space_of(x)

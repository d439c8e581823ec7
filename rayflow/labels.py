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

from rayflow.data.labels import LabelRange
from rayflow.filtering import class_cutoffs, global_cutoff, relabel, teacher_ce


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
        return teacher_ce(out, y)

    def teacher_label(self, out: torch.Tensor) -> torch.Tensor:
        return relabel(out)

    def agreement(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample "does the teacher see the condition": 1/0 (label consistency)."""
        return (out.argmax(1) == y.long()).float()

    def display(self, y):
        return y

    def display_error(self, e):
        return e

    np_dtype = np.int64

    def agree(self, a, b) -> np.ndarray:
        """Two label arrays agree: the same class."""
        return np.asarray(a) == np.asarray(b)

    def draw(self, stratum: int, n: int, seed: int) -> torch.Tensor:
        """`n` conditioning labels of one stratum (the class itself; `seed` unused)."""
        return torch.full((int(n),), int(stratum), dtype=torch.long)

    def cutoffs(self, errors: list[np.ndarray], rho: float) -> np.ndarray:
        """The filter's cutoffs, one per stratum: each class's own rho-quantile (the paper's M2)."""
        return class_cutoffs(np.concatenate(errors), np.repeat(np.arange(len(errors)), [len(e) for e in errors]),
                             rho, len(errors))

    def ratio_embedding(self) -> tuple[torch.nn.Module, int]:
        """The density-ratio net's label input: the official nn.Embedding(C, C)."""
        return torch.nn.Embedding(self.num_classes, self.num_classes), self.num_classes

    def to_dict(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes}


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

    np_dtype = np.float32

    def agree(self, a, b) -> np.ndarray:
        """Two label arrays agree: within half a stratum (see `agreement`)."""
        return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) <= self.tolerance

    def draw(self, stratum: int, n: int, seed: int) -> torch.Tensor:
        """`n` labels uniform inside the stratum, a function of (stratum, n, seed) only: a shard of
        draws is conditioned on a spread of labels, as CcGAN's sampler does, not on one value."""
        g = torch.Generator().manual_seed(int(seed))
        return (int(stratum) + torch.rand(int(n), generator=g)) / self.bins

    def cutoffs(self, errors: list[np.ndarray], rho: float) -> np.ndarray:
        """One global rho-quantile of |teacher - y| over every stratum (the paper's regression filter),
        repeated per stratum so per-stratum code reads it unchanged."""
        return np.full(len(errors), global_cutoff(np.concatenate(errors), rho), np.float64)

    def ratio_embedding(self) -> tuple[torch.nn.Module, int]:
        """The density-ratio net's label input for a scalar label: a fixed sinusoidal embedding
        (no weights, so the net's state dict is all it needs to reload)."""
        from rayflow.gan.label_embed import SinusoidalEmbedding

        return SinusoidalEmbedding(32), 32

    def to_dict(self) -> dict:
        r = self.range
        return {"kind": self.kind, "bins": self.bins,
                "range": None if r is None else {"lo": r.lo, "hi": r.hi, "unit": r.unit, "source": r.source}}


LabelSpace = Classes | Continuous


def space_of(num_classes: int | None, label_range: LabelRange | None = None, bins: int = 10) -> LabelSpace:
    """Classes when the data has class ids, else a continuous space over `label_range`."""
    return Classes(num_classes) if num_classes is not None else Continuous(label_range, bins)


def as_space(x: LabelSpace | int | dict | None) -> LabelSpace:
    """A label space from a space, a class count, its `to_dict()`, or None (continuous, normalised)."""
    if isinstance(x, (Classes, Continuous)):
        return x
    if isinstance(x, dict):
        if x.get("kind") == "classes":
            return Classes(int(x["num_classes"]))
        r = x.get("range")
        return Continuous(None if r is None else LabelRange(**r), int(x.get("bins", 10)))
    return space_of(x)


def space_of_data(data_cfg, num_classes: int | None, bins: int = 10) -> LabelSpace:
    """The space of the configured data (`DataConfig`): classes, or a continuous range in the unit
    the built-in regression sets report in (degrees)."""
    from rayflow.data.labels import label_range

    return space_of(num_classes, label_range(data_cfg) if num_classes is None else None, bins)

"""What the synthetic-data stage consumes, as plain objects, and the burn-in statistics it freezes.

Every decision of the stage depends only on these, the nets' weights and the SynthConfig, so the
Ray and local executors write identical shards and a killed run resumes to the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rayflow.config import SynthConfig
from rayflow.filtering import check_rho
from rayflow.labels import Classes, LabelSpace, as_space
from rayflow.models.io import ARCH
from rayflow.synth.manifest import SynthError

# seed streams: derive_seed(cfg.seed, STREAM, ...)
_SHARD_STREAM, _DRE_BURNIN_STREAM, _FILTER_BURNIN_STREAM = 0, 1, 2
_BURNIN_KEY = 2**32  # rng_key prefix of the filter burn-in's rejection draws (shard ids stay below)
_PRIOR_DRAWS = 200  # weight of the burn-in acceptance estimate, in draws, when planning rounds


@dataclass
class BurninStats:
    """Per-class results of the burn-in (lists of length num_classes; ``None`` where disabled)."""

    max_ratio: list[float] | None = None  # M̄_y: max density ratio over dre_burnin draws
    subsample_rate: list[float] | None = None  # mean min(r / M̄_y, 1) on those draws
    cutoffs: list[float] | None = None  # teacher-CE rho-quantile over filter_burnin subsampled draws
    filter_rate: list[float] | None = None  # fraction of the filter burn-in with CE <= cutoff
    # pool mode: the filter burn-in sample itself (per class: teacher CE and cDR-RS outcome of each
    # draw), so a view computes the cutoff of any rho from it
    filter_ce: list[list[float]] | None = None
    filter_accepted: list[list[bool]] | None = None
    filter_need: int | None = None  # how many (accepted) burn-in draws per class fix a cutoff

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BurninStats:
        return cls(**d)

    def expected_rate(self, num_classes: int) -> np.ndarray:
        """Prior probability that one draw ends up kept, per class."""
        rate = np.ones(num_classes)
        for r in (self.subsample_rate, self.filter_rate):
            if r is not None:
                rate *= np.asarray(r, np.float64)
        return rate


@dataclass
class SynthInputs:
    """Everything the stage consumes, as plain objects (the pipeline builds them from artifacts).

    ``generator`` is a zero-arg picklable factory (e.g. :class:`GeneratorSpec`, or
    ``functools.partial(load_generator, gan_dir)``); ``generator_state`` (the EMA weights) is loaded
    into it when given. Teacher and feature extractor are model directories
    (``rayflow.models.io``); the ratio net is a :class:`~rayflow.dre.RatioMLP` state dict with
    ``ratio_hidden``/``ratio_dropout`` (its ``feature_dim`` is the feature net's).
    ``burnin`` skips :func:`compute_burnin` when given. ``num_classes`` is the class count, or a
    label space (a continuous label: draws spread inside strata, a global filter cutoff).
    """

    num_classes: int | LabelSpace
    generator: Callable[[], nn.Module]
    generator_state: dict[str, torch.Tensor] | None = None
    teacher_dir: str | Path | None = None
    feature_dir: str | Path | None = None
    ratio_state: dict[str, torch.Tensor] | str | Path | None = None  # state dict or safetensors path
    ratio_hidden: tuple[int, ...] = (512, 256, 128)
    ratio_dropout: float = 0.5
    subsample: bool = True
    filter: bool = True
    rho: float = 0.9
    relabel: bool = True
    soft_labels: bool | None = None  # None: SynthConfig.soft_labels
    dre_burnin: int = 1000
    filter_burnin: int = 500
    burnin: BurninStats | None = None
    # pool mode: write every draw (ratio, cDR-RS outcome, teacher logits and CE), keep none out;
    # `cfg.m_per_class` is then the number of draws per class, starting at shard id `first_shard_id`
    pool: bool = False
    first_shard_id: int = 0

    @property
    def space(self) -> LabelSpace:
        return as_space(self.num_classes)

    @property
    def num_strata(self) -> int:
        """Per-stratum work (burn-in, planning, shares) runs over this many strata (= classes)."""
        return self.space.num_strata

    def soft(self, cfg: SynthConfig) -> bool:
        return cfg.soft_labels if self.soft_labels is None else bool(self.soft_labels)

    def uses_teacher(self, cfg: SynthConfig) -> bool:
        return self.filter or self.relabel or self.soft(cfg) or self.pool

    def validate(self, cfg: SynthConfig) -> None:
        """One SynthError listing every problem, before any compute."""
        errs = []
        C = self.num_strata
        if isinstance(self.space, Classes) and C < 2:
            errs.append(f"num_classes must be >= 2, got {C}")
        if self.subsample:
            if self.feature_dir is None or self.ratio_state is None:
                errs.append("subsample=True needs feature_dir and ratio_state (the cDR-RS nets)")
            if self.dre_burnin <= 0:
                errs.append(f"dre_burnin must be > 0, got {self.dre_burnin}")
        if self.uses_teacher(cfg) and self.teacher_dir is None:
            need = [n for n, on in (("filter", self.filter), ("relabel", self.relabel),
                                    ("soft_labels", self.soft(cfg))) if on]
            errs.append(f"{'/'.join(need)} need(s) teacher_dir")
        if self.pool and (self.filter or self.relabel):
            errs.append("a pool keeps every draw: filter and relabel are views of it, not pool settings")
        if self.filter:
            try:
                check_rho(self.rho)
            except ValueError as e:
                errs.append(str(e))
            if self.filter_burnin <= 0:
                errs.append(f"filter_burnin must be > 0, got {self.filter_burnin}")
        for name, d, used in (("teacher_dir", self.teacher_dir, self.uses_teacher(cfg)),
                              ("feature_dir", self.feature_dir, self.subsample)):
            if used and d is not None and not (Path(d) / ARCH).is_file():
                errs.append(f"{name} {d} is not a model artifact (no {ARCH})")
        b = self.burnin
        if b is not None:
            for name in ("max_ratio", "subsample_rate", "cutoffs", "filter_rate"):
                v = getattr(b, name)
                if v is not None and len(v) != C:
                    errs.append(f"burnin.{name} has {len(v)} entries for {C} classes")
            if self.subsample and (b.max_ratio is None or not all(m > 0 for m in b.max_ratio)):
                errs.append("burnin.max_ratio must give a positive max ratio for every class when subsampling")
            if self.filter and b.cutoffs is None:
                errs.append("burnin.cutoffs is required when filtering")
        if errs:
            raise SynthError("synth inputs: " + "; ".join(errs))

"""The search space of the cGAN-KD student hyper-parameters. No Ray imports.

Dimensions (fixed order, which is also the order of a config *key*):

* ``rho``           filtering quantile ρ ∈ (0, 1], linear scale;
* ``m``             fake samples per class M ≥ 1, integer, log scale;
* ``real_fraction`` share of real images per batch, (0, 1], linear (optional);
* ``kd_weight``     weight of the distillation loss, [0, 1], linear (optional);
* ``mix_alpha``     α of the mixing lever's λ ~ Beta(α, α), > 0, linear (optional; ``student.mix`` on);
* ``select_share``  share of the scored fakes the useful-fakes lever draws from, (0, 1], linear
  (optional; ``student.select_fakes`` on);
* ``latent_scale``  σ of the pool's latent draws z ~ N(0, σ²), > 0, log scale (optional; a trial
  with it reads the pool drawn at that σ).

Each dimension is a range ``(lo, hi)``; :meth:`SearchSpace.from_grids` builds one from explicit
value lists (the range is then their min/max and :meth:`SearchSpace.grid` returns exactly them).
Configs are plain dicts ``{"rho": float, "m": int, ...}`` so they pickle/JSON cleanly and can go
straight into a Ray Tune ``param_space``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DIMS", "KNOB_NAMES", "LOG_DIMS", "SearchSpace", "as_rng", "knob_text"]

DIMS: tuple[str, ...] = ("rho", "m", "real_fraction", "kd_weight", "mix_alpha", "select_share", "latent_scale")
# searched on a log scale (unit cube, grid, sampling): M, and the latent scale, whose 0.5 and 2 are
# equally far from the default 1
LOG_DIMS = frozenset({"m", "latent_scale"})
# each dimension as tables and the CLI name it
KNOB_NAMES = {"rho": "rho", "m": "M", "real_fraction": "real share", "kd_weight": "KD weight", "mix_alpha": "mix alpha",
              "select_share": "fake share", "latent_scale": "latent scale", "fm_alpha": "FM alpha"}


def knob_text(params: Mapping[str, Any]) -> str:
    """`rho 0.1, M 50, latent scale 2`: a setting as the CLI and logs say it."""
    return ", ".join(f"{KNOB_NAMES.get(k, k)} {v:g}" for k, v in params.items())
# Allowed closed/open domain of every dimension: (lo, lo_open, hi, hi_open).
_DOMAIN = {
    "rho": (0.0, True, 1.0, False),
    "m": (1, False, math.inf, True),
    "real_fraction": (0.0, True, 1.0, False),
    "kd_weight": (0.0, False, 1.0, False),
    "mix_alpha": (0.0, True, math.inf, True),
    "select_share": (0.0, True, 1.0, False),
    "latent_scale": (0.0, True, math.inf, True),
}
_DEFAULT_N = {"rho": 10, "m": 8, "real_fraction": 3, "kd_weight": 3, "mix_alpha": 3, "select_share": 3,
              "latent_scale": 3}


def as_rng(rng: Any) -> np.random.Generator:
    """``np.random.Generator`` from a Generator, an int seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _domain_text(name: str) -> str:
    lo, lo_open, hi, hi_open = _DOMAIN[name]
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_domain(name: str, v: float) -> bool:
    lo, lo_open, hi, hi_open = _DOMAIN[name]
    if not math.isfinite(v):
        return False
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def _check_range(name: str, rng: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise ValueError(f"search space: {name} must be a (lo, hi) pair of numbers, got {rng!r}") from None
    for v in (lo, hi):
        if not _in_domain(name, v):
            what = {"rho": "ρ must be in (0, 1]", "m": "M (fake samples per class) must be an integer ≥ 1"}
            msg = what.get(name, f"{name} must be in {_domain_text(name)}")
            raise ValueError(f"search space: {msg}, got {name}={v!r} in range ({lo!r}, {hi!r})")
    if lo > hi:
        raise ValueError(f"search space: {name} range has lo > hi: ({lo!r}, {hi!r})")
    if name == "m":
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"search space: M range must be integers, got ({lo!r}, {hi!r})")
        return int(lo), int(hi)
    return lo, hi


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of ρ, M and optionally ``real_fraction`` / ``kd_weight`` / ``mix_alpha`` / ``select_share``
    / ``latent_scale``; see the module docstring.

    ``grids`` (optional) maps a dimension to explicit values, used by :meth:`grid` instead of an
    even (linear dimensions) or geometric (M, latent scale) spacing. Raises ValueError on a bad range.
    """

    rho: tuple[float, float] = (0.05, 1.0)
    m: tuple[int, int] = (1000, 100_000)
    real_fraction: tuple[float, float] | None = None
    kd_weight: tuple[float, float] | None = None
    mix_alpha: tuple[float, float] | None = None
    select_share: tuple[float, float] | None = None
    latent_scale: tuple[float, float] | None = None
    grids: Mapping[str, Sequence[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in DIMS:
            r = getattr(self, name)
            if r is None:
                if name in ("rho", "m"):
                    raise ValueError(f"search space: {name} range is required")
                continue
            object.__setattr__(self, name, _check_range(name, r))
        grids: dict[str, tuple] = {}
        for name, values in dict(self.grids).items():
            if name not in self.dims:
                raise ValueError(f"search space: grid given for {name!r}, which is not a dimension of {self.dims}")
            vals = sorted({int(v) if name == "m" else float(v) for v in values})
            if not vals:
                raise ValueError(f"search space: empty grid for {name}")
            lo, hi = getattr(self, name)
            bad = [v for v in vals if not (lo <= v <= hi)]
            if bad or (name == "m" and any(float(v) != int(v) for v in values)):
                raise ValueError(
                    f"search space: grid values {bad or list(values)} of {name} outside ({lo}, {hi}) or not valid"
                )
            grids[name] = tuple(vals)
        object.__setattr__(self, "grids", grids)

    @classmethod
    def from_grids(cls, **grids: Sequence[float]) -> SearchSpace:
        """Space whose ranges are the min/max of explicit value lists, e.g. ``from_grids(rho=[.5, 1], m=[1e3, 1e4])``."""
        for name, values in grids.items():
            if name not in DIMS:
                raise ValueError(f"search space: unknown dimension {name!r}; known: {DIMS}")
            vals = list(values)
            if not vals:
                raise ValueError(f"search space: empty grid for {name}")
            bad = [v for v in vals if not _in_domain(name, float(v))]
            if bad:
                raise ValueError(f"search space: {name} values {bad} outside {_domain_text(name)}")
        ranges = {k: (min(v), max(v)) for k, v in grids.items()}
        if "rho" not in ranges or "m" not in ranges:
            raise ValueError("search space: from_grids needs at least rho and m")
        return cls(**ranges, grids=grids)

    # ------------------------------------------------------------------ structure
    @property
    def dims(self) -> tuple[str, ...]:
        """Active dimensions, in key order."""
        return tuple(d for d in DIMS if getattr(self, d) is not None)

    def key(self, config: Mapping[str, Any]) -> tuple:
        """Hashable key ``(rho, m[, real_fraction][, kd_weight])`` of a config (extra keys ignored)."""
        try:
            return tuple(int(config[d]) if d == "m" else float(config[d]) for d in self.dims)
        except KeyError as e:
            raise KeyError(f"config {dict(config)!r} lacks dimension {e.args[0]!r} of the search space") from None

    def from_key(self, key: Sequence[float]) -> dict:
        if len(key) != len(self.dims):
            raise ValueError(f"key {tuple(key)!r} does not match dimensions {self.dims}")
        return {d: (int(v) if d == "m" else float(v)) for d, v in zip(self.dims, key)}

    def to_unit(self, configs: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Coordinates in [0, 1]^d (log scale for `LOG_DIMS`): shape (d,) for one config, (n, d) for a list."""
        one = isinstance(configs, Mapping)
        rows = [configs] if one else list(configs)
        out = np.zeros((len(rows), len(self.dims)))
        for j, d in enumerate(self.dims):
            lo, hi = getattr(self, d)
            v = np.array([float(c[d]) for c in rows])
            if d in LOG_DIMS:
                lo, hi, v = math.log(lo), math.log(hi), np.log(np.maximum(v, 1e-300))
            out[:, j] = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return out[0] if one else out

    # ------------------------------------------------------------------ membership
    def contains(self, config: Mapping[str, Any]) -> bool:
        """True iff every active dimension is present, numeric, inside its range (M an integer)."""
        for d in self.dims:
            if d not in config:
                return False
            try:
                v = float(config[d])
            except (TypeError, ValueError):
                return False
            lo, hi = getattr(self, d)
            if not (math.isfinite(v) and lo <= v <= hi):
                return False
            if d == "m" and v != int(v):
                return False
        return True

    def clip(self, config: Mapping[str, Any]) -> dict:
        """Nearest config inside the space: values clipped to the ranges, M rounded (in log space)."""
        out = dict(config)
        for d in self.dims:
            lo, hi = getattr(self, d)
            v = float(config[d]) if d in config else (lo + hi) / 2
            if d == "m":
                v = round(v) if math.isfinite(v) else (hi if v > 0 else lo)
                out[d] = int(min(max(v, lo), hi))
            else:
                out[d] = float(min(max(v if not math.isnan(v) else lo, lo), hi))
        return out

    # ------------------------------------------------------------------ enumeration
    def values(self, name: str, n: int | None = None) -> list:
        """Grid values of one dimension: the explicit grid, else ``n`` evenly (`LOG_DIMS`: geometrically) spaced."""
        if name in self.grids:
            return list(self.grids[name])
        lo, hi = getattr(self, name)
        n = _DEFAULT_N[name] if n is None else int(n)
        if n < 1:
            raise ValueError(f"grid: need at least one value of {name}, got n={n}")
        if name == "m":
            return sorted({int(np.rint(v)) for v in np.geomspace(lo, hi, n)})
        if name in LOG_DIMS:
            # 10 significant digits: geomspace(0.5, 2, 3)[-1] is 1.9999999999999998, whose pool would not
            # be the one `--set synth.latent_scale=2` builds
            return sorted({float(f"{v:.10g}") for v in np.geomspace(lo, hi, n)})
        return sorted({float(v) for v in np.linspace(lo, hi, n)})

    def grid(
        self,
        n_rho: int | None = None,
        n_m: int | None = None,
        n_real_fraction: int | None = None,
        n_kd_weight: int | None = None,
        n_mix_alpha: int | None = None,
        n_select_share: int | None = None,
        n_latent_scale: int | None = None,
    ) -> list[dict]:
        """Cartesian grid as a list of config dicts (ρ-major order); explicit grids override the counts."""
        counts = {"rho": n_rho, "m": n_m, "real_fraction": n_real_fraction, "kd_weight": n_kd_weight,
                  "mix_alpha": n_mix_alpha, "select_share": n_select_share, "latent_scale": n_latent_scale}
        axes = [self.values(d, counts[d]) for d in self.dims]
        mesh = np.array(np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")).reshape(len(axes), -1).T
        return [self.from_key([axes[j][i] for j, i in enumerate(row)]) for row in mesh]

    def sample(self, rng: Any = None) -> dict:
        """One config drawn uniformly (`LOG_DIMS` log-uniformly, M rounded) from the ranges."""
        rng = as_rng(rng)
        out: dict = {}
        for d in self.dims:
            lo, hi = getattr(self, d)
            if d == "m":
                v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
                out[d] = int(min(max(round(v), lo), hi))
            elif d in LOG_DIMS:
                out[d] = float(min(max(math.exp(rng.uniform(math.log(lo), math.log(hi))), lo), hi))
            else:
                out[d] = float(rng.uniform(lo, hi))
        return out

    def to_dict(self) -> dict:
        return {**{d: list(getattr(self, d)) for d in self.dims}, "grids": {k: list(v) for k, v in self.grids.items()}}

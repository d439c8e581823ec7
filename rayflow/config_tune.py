"""Config of `rayflow tune` (split from rayflow/config.py, which re-exports it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_serializer

from rayflow.config_base import _Strict


LEVER_KNOBS = ("mix_alpha", "select_share", "latent_scale")  # added after search names were first pinned


class TuneConfig(_Strict):
    """`rayflow tune`: a search over the filtering quantile rho and the fakes per class M (optionally
    the real share per batch and the KD weight), each trial one student scored on validation data."""

    searcher: Literal["grid", "random", "tpe", "bound"] = "bound"
    trials: int = Field(8, gt=0, description="student trainings the search may spend")
    rho: tuple[float, float] = (0.1, 1.0)
    m_per_class: tuple[int, int] = (50, 2000)
    real_fraction: tuple[float, float] | None = None
    kd_weight: tuple[float, float] | None = None
    mix_alpha: tuple[float, float] | None = Field(None, description=(
        "range of the mixing lever's alpha (student.mix.alpha; needs student.mix.kind set), e.g. [0.2, 2]"))
    select_share: tuple[float, float] | None = Field(None, description=(
        "range of the useful-fakes lever's share (student.select_fakes.share; needs student.select_fakes.by "
        "set), e.g. [0.2, 1]"))
    latent_scale: tuple[float, float] | None = Field(None, description=(
        "range of the pool's latent scale (synth.latent_scale, log scale), e.g. [0.5, 2]: each trial reads "
        "the pool drawn at its scale (built once per scale, keyed by it)"))
    grid: tuple[int, ...] = Field((6, 5), description="points per dimension of the candidate grid, by position: "
                                  "rho, M, real share, KD weight, mix alpha, fake share, latent scale (3 for a searched dimension not "
                                  "given); the grid searcher's points, the bound's table, the other searchers' "
                                  "candidates")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the labelled images held out to score "
                                                            "trials (the test set is never used to choose)")
    asha: bool = Field(True, description="stop weak trials early on samples seen (Ray executor)")
    evals: int = Field(4, gt=0, description="validation reports per trial (the rungs ASHA compares)")
    max_draws_per_class: int | None = Field(None, gt=0, description=(
        "draw budget per class of one candidate's view: a (rho, M) the pool would need more generator draws "
        "per class for (estimated from the pool before any trial) is left out of the search, and said so; "
        "None: synth.max_draws_per_class"))
    fm_alpha: tuple[float, float] = Field((0.2, 2.0), description=(
        "range of the function-matching baseline's mixing alpha (function_matching.alpha, log scale): `rayflow "
        "tune` gives FM as many validation trials as cGAN-KD's search, its hand-set alpha among them"))
    finalists: int = Field(3, ge=0, description=(
        "the best settings re-scored on more student seeds before the choice (0: off); the prior's "
        "(hand-set, bound's best) trialled settings join them"))
    rescore_seeds: int = Field(2, ge=0, description="extra student seeds each finalist is re-scored on")
    seed: int = 0

    @model_serializer(mode="wrap")
    def _dump_without_unset_levers(self, handler):
        """The levers' knobs are dumped only when set: a search's name (a digest of this section)
        stays what it was."""
        out = handler(self)
        for k in LEVER_KNOBS:
            if out.get(k, 0) is None:
                out.pop(k)
        return out

    @field_validator("rho")
    @classmethod
    def _rho(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError(f"must be a range within (0, 1], got {list(v)}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(v) <= 7 or any(int(n) < 1 for n in v):
            raise ValueError(f"must be 2 to 7 point counts >= 1 (rho, M[, real share][, KD weight][, mix alpha]"
                             f"[, fake share][, latent scale]), got {list(v)}")
        return v

    @field_validator("latent_scale", "fm_alpha", "m_per_class")
    @classmethod
    def _positive_range(cls, v: tuple | None, info) -> tuple | None:
        what = {"latent_scale": "latent scales", "fm_alpha": "mixing alphas", "m_per_class": "sample counts"}
        if v is not None and not (0 < v[0] <= v[1]):
            raise ValueError(f"must be a range of positive {what[info.field_name]}, got {list(v)}")
        return v

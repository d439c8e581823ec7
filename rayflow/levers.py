"""Ablation rows for the cGAN-KD levers (`lever_rows`): one extra cGAN-KD student per named lever,
with that lever alone on, beside the plain cGAN-KD row, so each lever's own effect is measured in
the same run (issue 29: "each lever alone").

A row is the run's effective cGAN-KD student under the run's config with every lever off but its
own, which keeps its configured setting, or, when the config leaves it off, `DEFAULTS`:

* ``mix``: MixUp, alpha 1.0 (lambda uniform);
* ``select_fakes``: by teacher entropy, the top share 0.5, re-scored every 50 steps;
* ``latent_scale``: the pool drawn with z ~ N(0, 1.5^2) (its truncation, if set, kept).

So a row's student is the very node (same key, same cached artifact) that `rayflow run` with that
lever set by `--set` would train, and the rows train in the batched executor run of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from rayflow.config import LATENT_DEFAULTS, PipelineConfig
from rayflow.config_mix import LeverName, MixConfig, SelectFakesConfig
from rayflow.report.summary import LEVER_PREFIX  # the rows' names (not "cGAN-KD + ": the KD-method table's)

LEVERS = get_args(LeverName)
DEFAULT_LATENT_SCALE = 1.5
DEFAULTS = {"mix": MixConfig(kind="mixup", alpha=1.0),
            "select_fakes": SelectFakesConfig(by="entropy", share=0.5, every=50)}


@dataclass(frozen=True)
class LeverRow:
    lever: str
    label: str
    cfg: PipelineConfig  # the run's config with this lever alone on

    def setting(self) -> dict:
        """What the row sets, for results.json."""
        if self.lever == "latent_scale":
            return {f"synth.{k}": v for k, v in self.cfg.synth.latent_kwargs().items()}
        return {f"student.{self.lever}": getattr(self.cfg.student, self.lever).model_dump()}


def alone(cfg: PipelineConfig, lever: str) -> PipelineConfig:
    """`cfg` with every lever off but `lever`, set as configured or at its default (a copy: the
    config sections are replaced, never validated again, as tune's cross-checks would refuse a
    searched knob of a lever switched off here)."""
    if lever not in LEVERS:
        raise ValueError(f"unknown lever {lever!r}; known: {', '.join(LEVERS)}")
    s = cfg.student
    student = {name: (getattr(s, name) if getattr(s, name).on else DEFAULTS[name]) if name == lever
               else type(DEFAULTS[name])() for name in DEFAULTS}
    latent = dict(LATENT_DEFAULTS)
    if lever == "latent_scale":
        latent.update(cfg.synth.latent_kwargs())  # a configured truncation is kept
        if cfg.synth.latent_scale == LATENT_DEFAULTS["latent_scale"]:
            latent["latent_scale"] = DEFAULT_LATENT_SCALE
    return cfg.model_copy(update={"student": s.model_copy(update=student),
                                  "synth": cfg.synth.model_copy(update=latent)})


def label_of(lever: str, cfg: PipelineConfig) -> str:
    """The row's name, with its setting: `cGAN-KD with mixing (mixup, alpha 1)`."""
    if lever == "mix":
        m = cfg.student.mix
        return f"{LEVER_PREFIX}mixing ({m.kind}, alpha {m.alpha:g})"
    if lever == "select_fakes":
        f = cfg.student.select_fakes
        return f"{LEVER_PREFIX}useful fakes ({f.by}, top {f.share:g})"
    t = cfg.synth.truncation
    return f"{LEVER_PREFIX}latent scale {cfg.synth.latent_scale:g}" + ("" if t is None else f", truncation {t:g}")


def rows(cfg: PipelineConfig) -> list[LeverRow]:
    """The rows `lever_rows` asks for, in its order."""
    out = []
    for lever in cfg.lever_rows:
        c = alone(cfg, lever)
        out.append(LeverRow(lever, label_of(lever, c), c))
    return out


"""Checks across sections for the cGAN-KD levers (split from rayflow/config.py): a knob or
option that would silently change nothing, or cannot apply to the task, is one clear line."""

from __future__ import annotations

from typing import Any


def check_levers(cfg: Any) -> None:
    """Raises ValueError (pydantic turns it into the ConfigError line) on a lever setting that
    cannot act: a tune knob of a lever that is off, the y2h label input on classes, the
    useful-fakes lever on a continuous label, a lever's row asked for twice."""
    if cfg.tune.mix_alpha is not None and not cfg.student.mix.on:
        raise ValueError("tune.mix_alpha searches student.mix.alpha, but the mixing lever is off: set "
                         "student.mix.kind (mixup, cutmix or both)")
    if cfg.tune.select_share is not None and not cfg.student.select_fakes.on:
        raise ValueError("tune.select_share searches student.select_fakes.share, but the useful-fakes lever "
                         "is off: set student.select_fakes.by (entropy or kl)")
    if cfg.gan.label_input != "joint" and cfg.data.task != "regression":
        raise ValueError(f"gan.label_input {cfg.gan.label_input} is the CcGAN's label input for regression; "
                         f"data.task is {cfg.data.task} (class labels need none): drop it")
    if cfg.data.task == "regression" and (cfg.student.select_fakes.on or "select_fakes" in cfg.lever_rows):
        raise ValueError("the useful-fakes lever (student.select_fakes, lever_rows: select_fakes) scores class "
                         "distributions: not for data.task regression")
    twice = sorted({r for r in cfg.lever_rows if cfg.lever_rows.count(r) > 1})
    if twice:
        raise ValueError(f"lever_rows: {', '.join(twice)} named more than once (one row per lever)")

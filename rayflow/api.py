"""The Python API behind `rayflow.distill`, `rayflow.load_student` and `rayflow.predict`, for
notebooks and scripts: the CLI's commands as functions that return objects instead of printing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayflow.config import ConfigError, PipelineConfig
from rayflow.distill_student import DistillResult
from rayflow.student.module import load_student

__all__ = ["DistillResult", "distill", "load_student", "predict", "resolve"]


def resolve(config: str | Path | PipelineConfig | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """A config from a path, a packaged name (`tiny`, `demo`, ...) or a PipelineConfig, with dotted-key
    overrides applied (`{"student.train.steps": 50}`) and validated as `--set` would be."""
    from rayflow.cli import resolve_config
    from rayflow.config_load import apply_overrides, build_config, read_yaml

    if isinstance(config, PipelineConfig):
        raw, source = config.model_dump(mode="json"), "(PipelineConfig)"
    elif config is None:
        raw, source = {}, "(defaults)"
    elif isinstance(config, (str, Path)):
        path = resolve_config(str(config))
        raw, source = read_yaml(path), str(path)
    else:
        raise ConfigError(f"config must be a path, a packaged config name or a PipelineConfig, got "
                          f"{type(config).__name__}")
    items = [f"{k}={_yaml(v)}" for k, v in (overrides or {}).items()]
    return build_config(PipelineConfig, apply_overrides(raw, items), source=source, overrides=items)


def _yaml(value: Any) -> str:
    """A Python value as the YAML `--set` parses back to the same value (JSON is YAML; a string stays one)."""
    import json

    return json.dumps(value)


def distill(config: str | Path | PipelineConfig, *, search: bool = False, **overrides: Any) -> DistillResult:
    """`rayflow distill`: trains (or reuses) teacher, NOKD, BLKD and the cGAN-KD student and writes
    `<output_dir>/student/`; returns its location, its test metrics and the comparison rows."""
    from rayflow.distill_student import distill as _distill

    return _distill(resolve(config, overrides), search=search)


def predict(model_dir: str | Path, inputs, *, use_ray: bool | None = None, gpu: bool = False,
            actors: int = 2):
    """`rayflow predict` as a pandas DataFrame: one row per image (`input`, `predicted`, `prob_<class>`;
    regression: `value` in the label's unit). `inputs`: image files, folders, an NPZ (`x`) or a Parquet
    file (`image`), or an array of images ((N, H, W), (N, H, W, C) or (N, C, H, W); uint8, or float in
    [0, 1]); `use_ray`: None picks Ray Data batch inference above `RAY_ABOVE` images."""
    import numpy as np

    from rayflow.student.predict import predict_frame

    items = inputs if isinstance(inputs, np.ndarray) else [inputs] if isinstance(inputs, (str, Path)) \
        else list(inputs)
    return predict_frame(model_dir, items, use_ray=use_ray, gpu=gpu, actors=actors)

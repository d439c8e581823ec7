"""Small image networks (CIFAR-style, after RepDistiller) behind one registry.

``build_model(name, in_channels=..., image_size=..., num_outputs=...)`` is the
only way the rest of rayflow creates networks, so teacher/student choices are
plain strings in configs.
"""
from __future__ import annotations

import inspect

from torch import nn

from .base import _REGISTRY, FeatureNet, channels_last, register
from . import external, mlp, mobilenetv2, resnet, shufflenetv2, vgg, wrn  # noqa: F401  (registers)

__all__ = ["FeatureNet", "build_model", "list_models", "register"]


def list_models() -> list[str]:
    """The networks a config may name (the adapter `external` is built from teacher.checkpoint)."""
    return sorted(n for n in _REGISTRY if n != external.NAME)


def is_known(name: str) -> bool:
    """A name model.json may hold: a registered network (the adapter too) or an import path."""
    from rayflow.user_code import is_import_path

    return name in _REGISTRY or is_import_path(name)


def _check_kwargs(name: str, builder, kwargs: dict) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    fixed = {"in_channels", "image_size", "num_outputs"}
    allowed = [p for p in params if p not in fixed]
    bad = sorted(k for k in kwargs if k not in allowed)
    if bad:
        raise ValueError(
            f"model {name!r} got unexpected kwarg(s) {bad}; it accepts {allowed or 'none'}"
        )


def build_model(
    name: str, *, in_channels: int = 1, image_size: int = 28, num_outputs: int = 10, **kwargs
) -> nn.Module:
    """A registered network, or (name 'package.module:factory') the user's own in the adapter."""
    from rayflow.user_code import is_import_path

    if is_import_path(name):
        name, kwargs = external.NAME, external.student_kwargs(name, kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    for arg, val in (("in_channels", in_channels), ("image_size", image_size), ("num_outputs", num_outputs)):
        if int(val) < 1:
            raise ValueError(f"model {name!r}: {arg} must be >= 1, got {val}")
    builder = _REGISTRY[name]
    _check_kwargs(name, builder, kwargs)
    return channels_last(builder(in_channels=in_channels, image_size=image_size, num_outputs=num_outputs, **kwargs))

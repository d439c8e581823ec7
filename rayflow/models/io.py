"""A trained model artifact: weights (safetensors) + what is needed to rebuild the network."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rayflow.checkpoint import CheckpointError, load_into, load_weights, save_weights
from rayflow.config import ModelConfig
from rayflow.models import build_model, is_known, list_models

WEIGHTS = "model.safetensors"
ARCH = "model.json"
KD_WEIGHTS = "kd.safetensors"  # a KD student's criterion state (method adapters, CRD bank); never needed to predict
_SIZES = ("in_channels", "image_size", "num_outputs")


def save_model(dir_: Path, state: dict[str, torch.Tensor], model: ModelConfig, in_channels: int,
               image_size: int, num_outputs: int) -> None:
    save_weights(state, dir_ / WEIGHTS)
    (dir_ / ARCH).write_text(json.dumps({"name": model.name, "kwargs": model.kwargs, "in_channels": in_channels,
                                         "image_size": image_size, "num_outputs": num_outputs}))


def read_arch(dir_: str | Path) -> dict:
    """model.json, checked key by key: a hand-edited or foreign file fails in one line naming the
    file and the key, not with a KeyError from deep inside build_model."""
    d = Path(dir_)
    f = d / ARCH
    if not f.is_file():
        raise CheckpointError(f"{d} is not a model artifact (no {ARCH})")
    try:
        arch = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is corrupt: {e}") from None
    if not isinstance(arch, dict):
        raise CheckpointError(f"{f} must hold a JSON object, got {type(arch).__name__}")
    missing = [k for k in ("name", *_SIZES) if k not in arch]
    if missing:
        raise CheckpointError(f"{f} has no key {', '.join(map(repr, missing))} (it has: "
                              f"{', '.join(map(repr, sorted(arch))) or 'nothing'})")
    if not is_known(str(arch["name"])):
        raise CheckpointError(f"{f}: unknown model {arch['name']!r}; known models: {', '.join(list_models())}")
    for k in _SIZES:
        if not isinstance(arch[k], int) or isinstance(arch[k], bool) or arch[k] < 1:
            raise CheckpointError(f"{f}: {k} must be a positive integer, got {arch[k]!r}")
    if not isinstance(arch.setdefault("kwargs", {}), dict):
        raise CheckpointError(f"{f}: kwargs must be a JSON object, got {arch['kwargs']!r}")
    return arch


def check_fits(dir_: str | Path, arch: dict, shape: tuple[int, int, int], num_classes: int | None) -> None:
    """Compares model.json with the data before any forward pass: a mismatch otherwise surfaces as a
    long shape RuntimeError (or a silent IndexError on labels) from inside the network."""
    c, h, w = shape
    outputs = 1 if num_classes is None else num_classes
    ic, size, no = (arch[k] for k in _SIZES)
    diff = [what for what, ok in (("channel count", ic == c), ("image size", size == h == w),
                                   ("number of outputs", no == outputs)) if not ok]
    if diff:
        kind = "regression (1 output)" if num_classes is None else f"{num_classes} classes"
        verb = "differs" if len(diff) == 1 else "differ"
        raise CheckpointError(f"model {dir_} does not fit the data ({' and '.join(diff)} {verb}): model expects "
                              f"{ic}x{size}x{size} images with {no} outputs; test data is {c}x{h}x{w} with {kind}")


def load_model(dir_: str | Path) -> torch.nn.Module:
    d = Path(dir_)
    arch = read_arch(d)
    try:
        model = build_model(arch["name"], **{k: arch[k] for k in _SIZES}, **arch["kwargs"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d / ARCH}: cannot build the model: {e}") from None
    load_into(model, load_weights(d / WEIGHTS), str(d / WEIGHTS))
    return model.eval()

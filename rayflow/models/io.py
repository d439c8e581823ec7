"""A trained model artifact: weights (safetensors) + what is needed to rebuild the network."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rayflow.checkpoint import CheckpointError, load_into, load_weights, save_weights
from rayflow.config import ModelConfig
from rayflow.models import build_model

WEIGHTS = "model.safetensors"
ARCH = "model.json"


def save_model(dir_: Path, state: dict[str, torch.Tensor], model: ModelConfig, in_channels: int,
               image_size: int, num_outputs: int) -> None:
    save_weights(state, dir_ / WEIGHTS)
    (dir_ / ARCH).write_text(json.dumps({"name": model.name, "kwargs": model.kwargs, "in_channels": in_channels,
                                         "image_size": image_size, "num_outputs": num_outputs}))


def load_model(dir_: str | Path) -> torch.nn.Module:
    d = Path(dir_)
    if not (d / ARCH).is_file():
        raise CheckpointError(f"{d} is not a model artifact (no {ARCH})")
    try:
        arch = json.loads((d / ARCH).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / ARCH} is corrupt: {e}") from None
    model = build_model(arch["name"], in_channels=arch["in_channels"], image_size=arch["image_size"],
                        num_outputs=arch["num_outputs"], **arch["kwargs"])
    load_into(model, load_weights(d / WEIGHTS), str(d / WEIGHTS))
    return model.eval()

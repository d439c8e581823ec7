"""Weights on disk: safetensors for models, `torch.load(weights_only=True)` for training states.

Both are written atomically, and every read failure becomes one CheckpointError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rayflow.atomic import atomic_file


class CheckpointError(RuntimeError):
    pass


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_file(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError / OSError on corrupt files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file: {e}") from None


def save_state(state: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {type(e).__name__}: {e}") from None


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(f"checkpoint {source} does not fit model {type(model).__name__}: "
                              f"{' '.join(first)}") from None

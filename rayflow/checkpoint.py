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


def _names(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _mismatch(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> list[str]:
    """Counts and first names of what differs: torch lists every key, kilobytes for another architecture."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k}: checkpoint {list(got[k].shape)}, model {list(want[k].shape)}" for k in want
              if k in got and got[k].shape != want[k].shape]
    return [f"{len(keys)} {what if len(keys) == 1 else plural} ({_names(keys)})" for what, plural, keys in
            (("missing key", "missing keys", missing), ("unexpected key", "unexpected keys", unexpected),
             ("shape mismatch", "shape mismatches", shapes)) if keys]


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    problems = _mismatch(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit model {type(model).__name__}: "
                              f"{'; '.join(problems)}")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(f"checkpoint {source} does not fit model {type(model).__name__}: "
                              f"{' '.join(first)}") from None

"""Batched training runs read back items that finished before a worker-group restart."""

from contextlib import contextmanager

import pytest
import torch

from rayflow.checkpoint import save_state
from rayflow.ray.train import _from_checkpoint


class _Ckpt:
    def __init__(self, path):
        self.path = path

    @contextmanager
    def as_directory(self):
        yield self.path


class _Result:
    path = "run"

    def __init__(self, best):
        self.best_checkpoints = best


def _ckpt(tmp_path, name, item, value):
    d = tmp_path / name
    d.mkdir()
    save_state({"model": {"w": torch.full((2,), float(value))}, "item": item, "step": 5}, d / "state.pt")
    return _Ckpt(d)


def test_from_checkpoint_picks_the_items_own_final_state(tmp_path):
    best = [(_ckpt(tmp_path, "a", 0, 1.0), {"item": 0, "step": 5, "test_acc": 70.0}),
            (_ckpt(tmp_path, "b", 1, 2.0), {"item": 1, "step": 5, "test_acc": 80.0})]
    state, metrics = _from_checkpoint(_Result(best), 1)
    assert torch.equal(state["w"], torch.full((2,), 2.0))
    assert metrics == {"step": 5, "test_acc": 80.0}
    with pytest.raises(RuntimeError, match="no checkpoint for item 2"):
        _from_checkpoint(_Result(best), 2)

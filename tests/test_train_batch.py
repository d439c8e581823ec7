"""Batched training runs read back items that finished before a worker-group restart."""

import contextlib

import pytest
import torch

from rayflow.checkpoint import save_state
from rayflow.executors import Checkpoint
from rayflow.train.batched import from_checkpoints


def _ckpt(tmp_path, name, item, value, metrics):
    d = tmp_path / name
    d.mkdir()
    save_state({"model": {"w": torch.full((2,), float(value))}, "item": item, "step": 5}, d / "state.pt")
    return Checkpoint(metrics, lambda: contextlib.nullcontext(d))


def test_from_checkpoint_picks_the_items_own_final_state(tmp_path):
    best = [_ckpt(tmp_path, "a", 0, 1.0, {"item": 0, "step": 5, "test_acc": 70.0}),
            _ckpt(tmp_path, "b", 1, 2.0, {"item": 1, "step": 5, "test_acc": 80.0})]
    state, metrics = from_checkpoints(best, 1)
    assert torch.equal(state["w"], torch.full((2,), 2.0))
    assert metrics == {"step": 5, "test_acc": 80.0}
    with pytest.raises(RuntimeError, match="no checkpoint for item 2"):
        from_checkpoints(best, 2)

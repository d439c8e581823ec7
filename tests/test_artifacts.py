"""Caching, atomic writes and checkpoint errors."""

import subprocess
import sys
import textwrap

import pytest
import torch

from rayflow.checkpoint import (
    CheckpointError,
    load_state,
    load_weights,
    save_state,
    save_weights,
)
from rayflow.store import ArtifactStore


def test_killed_writer_leaves_no_half_artifact(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from rayflow.store import ArtifactStore
        def build(d):
            (d / "half.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        ArtifactStore({str(tmp_path)!r}).build("s", "k1", build)
    """)
    r = subprocess.run([sys.executable, "-c", script])
    assert r.returncode == -9
    store = ArtifactStore(str(tmp_path))
    assert store.lookup("s", "k1") is None  # what the killed run left is never taken for a result
    art = store.build("s", "k1", lambda d: {"ok": 1})
    assert not art.reused and art.metrics == {"ok": 1}
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "artifacts" / "s").iterdir())


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    p = save_weights({"w": torch.ones(3)}, tmp_path / "m.safetensors")
    assert torch.equal(load_weights(p)["w"], torch.ones(3))
    p.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(p)
    s = save_state({"step": 3, "w": torch.zeros(2)}, tmp_path / "s.pt")
    assert load_state(s)["step"] == 3
    s.write_bytes(s.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(s)
    with pytest.raises(CheckpointError, match="not found"):
        load_state(tmp_path / "missing.pt")


def test_model_artifact_mismatch_is_clear(tmp_path):
    from rayflow.config import ModelConfig
    from rayflow.models import build_model
    from rayflow.models.io import load_model, save_model

    m = build_model("mlp", in_channels=1, image_size=8, num_outputs=3)
    save_model(tmp_path, m.state_dict(), ModelConfig(name="mlp"), 1, 8, 3)
    assert load_model(tmp_path)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    save_model(tmp_path, m.state_dict(), ModelConfig(name="mlp"), 1, 8, 4)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path)

"""Caching, atomic writes and checkpoint errors."""

import subprocess
import sys
import textwrap

import pytest
import torch

from rayflow.artifacts import run_stage, stage_key
from rayflow.checkpoint import CheckpointError, load_state, load_weights, save_state, save_weights


def test_rerun_reuses_cached_artifact(tmp_path):
    calls = []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("hi")
        return {"acc": 1.0}

    a = run_stage(tmp_path, "s", {"lr": 1}, [], build)
    b = run_stage(tmp_path, "s", {"lr": 1}, [], build)
    assert len(calls) == 1 and b.reused and b.path == a.path and b.metrics == {"acc": 1.0}
    c = run_stage(tmp_path, "s", {"lr": 2}, [], build)
    assert len(calls) == 2 and c.path != a.path
    d = run_stage(tmp_path, "t", {"lr": 1}, [a], build)
    assert d.key == stage_key("t", {"lr": 1}, [a]) != stage_key("t", {"lr": 1}, [c])


def test_failed_build_leaves_nothing(tmp_path):
    def build(d):
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "s", {}, [], build)
    assert list((tmp_path / "s").iterdir()) == []


def test_killed_writer_leaves_no_half_artifact(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, pathlib
        from rayflow.artifacts import run_stage
        def build(d):
            (d / "half.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        run_stage({str(tmp_path)!r}, "s", {{}}, [], build)
    """)
    r = subprocess.run([sys.executable, "-c", script])
    assert r.returncode == -9
    leftovers = list((tmp_path / "s").iterdir())
    assert all(p.name.startswith(".tmp-") for p in leftovers)  # never a final-looking dir
    art = run_stage(tmp_path, "s", {}, [], lambda d: {"ok": 1})
    assert not art.reused and not any(p.name.startswith(".tmp-") for p in (tmp_path / "s").iterdir())


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
    from rayflow.stages.models_io import load_model, save_model

    m = build_model("mlp", in_channels=1, image_size=8, num_outputs=3)
    save_model(tmp_path, m.state_dict(), ModelConfig(name="mlp"), 1, 8, 3)
    assert load_model(tmp_path)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    save_model(tmp_path, m.state_dict(), ModelConfig(name="mlp"), 1, 8, 4)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path)

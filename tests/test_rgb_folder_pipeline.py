"""A user's folder of RGB pictures (mixed sizes, named classes) through every stage at 32 px."""

import json

import numpy as np
import pytest

from rayflow.config import load_config
from rayflow.pipeline import Pipeline

pytestmark = pytest.mark.slow

FAST = ["runtime.executor=local", "data.image_size=32", "data.n_per_class=null", "data.heldout_per_class=8",
        "teacher.train.steps=20", "student.train.steps=10", "baseline_steps=10", "gan.steps=8",
        "gan.checkpoint_every=4", "gan.batch_size=16", "dre.steps=10", "dre.feature_train.steps=10", "dre.burnin=20", "filter.burnin=10",
        "synth.m_per_class=8", "synth.pool_draws=40", "synth.batch_size=40", "synth.shard_size=40"]


def _rgb_folder(root):
    """Three named classes, each a colour, 20-60 px pictures of varying aspect."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, (name, rgb) in enumerate({"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items()):
        (root / name).mkdir(parents=True)
        for i in range(28):
            w, h = rng.integers(20, 61, 2)
            a = np.clip(np.array(rgb) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_rgb_folder_runs_every_stage(tmp_path):
    cfg = load_config("rayflow/configs/tiny.yaml", [f"output_dir={tmp_path / 'out'}", "data.name=folder",
                                                      f"data.path={_rgb_folder(tmp_path / 'pics')}", *FAST])
    p = Pipeline(cfg)
    assert p.splits.shape == (3, 32, 32) and p.splits.class_names == ["blue", "green", "red"]
    results = p.run()
    models = [r["model"] for r in results["rows"]]
    for name in ("teacher", "NOKD student", "BLKD student", "perfect generator (oracle)",
                 "cGAN-KD: + KD term on soft labels"):
        assert name in models
    assert all(np.isfinite(r["test_acc"]) for r in results["rows"])
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["class_names"] == ["blue", "green", "red"] and on_disk["ablation"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "(blue)" in html  # the per-class table names the classes

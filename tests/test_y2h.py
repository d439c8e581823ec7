"""The CcGAN paper's improved label input (gan.label_input: y2h): a regression CNN on the real
images, y2h fitted to its head, frozen and shared by G and D through GAN training. Off by default
(every key kept), refused for class labels, re-keys the GAN when on. No Ray."""

from __future__ import annotations

import pytest
import torch
from test_ccgan import SMALL, toy_set

from rayflow.config import ConfigError, GANConfig, ScalingConfig, load_config
from rayflow.data.imageset import ImageSet
from rayflow.executors import get_executor
from rayflow.gan import generate
from rayflow.gan.sampling import ema_generator
from rayflow.gan.training import gan_worker
from rayflow.gan.y2h import fit_label_input, load_y2h
from rayflow.stages.graph import Node, node_inputs, node_key
from rayflow.stages.synth import pool_node

REG = "rayflow/configs/regression_tiny.yaml"


@pytest.fixture(scope="module")
def fitted():
    """A label input fitted on 16x16 images whose brightness encodes y (`toy_set`)."""
    images, labels = toy_set(300)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y2h, metrics = fit_label_input(images, labels, 16, steps=300, seed=0, batch_size=32)
    finally:
        torch.set_num_threads(old)
    return images, labels, y2h, metrics


def test_the_cnn_reads_y_and_y2h_inverts_its_head(fitted):
    _, labels, y2h, m = fitted
    assert m["label_cnn_train_mae"] < 0.5 * float(abs(labels - labels.mean()).mean())  # well below guessing the mean
    assert m["y2h_roundtrip_mae"] < 0.05  # h2y(y2h(y)) ~ y
    assert not any(p.requires_grad for p in y2h.parameters())
    h = y2h(torch.tensor([0.1, 0.9]))
    assert not torch.allclose(h[0], h[1])  # an embedding that tells labels apart


def test_gan_training_keeps_y2h_frozen_in_g_and_d_and_g_follows_y(fitted, tmp_path):
    """The worker loads the y2h stage's file into G, EMA(G) and D's projection; after GAN steps all
    still equal it, and the generator's output changes with y."""
    from rayflow.checkpoint import save_state

    images, labels, y2h, _ = fitted
    save_state(y2h.state_dict(), tmp_path / "y2h.pt")
    cfg = GANConfig(**{**SMALL, "steps": 4, "checkpoint_every": 4, "label_input": "y2h"})
    res = get_executor(load_config(REG, ["runtime.executor=local"]).runtime).fit(
        gan_worker, {"gan": cfg, "train": ImageSet(images, labels.astype("float32")), "teacher_dir": None,
                     "name": "gan-y2h", "y2h": tmp_path / "y2h.pt"},
        name="gan-y2h", scaling=ScalingConfig(), storage=(str(tmp_path), None), keep=None)
    with res.checkpoints[-1].open() as d:
        state = torch.load(d / "state.pt", weights_only=True)
    assert int(state["step"]) == 4
    want = load_y2h(tmp_path / "y2h.pt", 16).state_dict()
    parts = {"G": state["G"], "G_ema": state["G_ema"]["model"], "D": state["D"]}
    for part, prefix in (("G", "label_embedding."), ("G_ema", "label_embedding."), ("D", "label_embedding.embed.")):
        got = {k.removeprefix(prefix): v for k, v in parts[part].items() if k.startswith(prefix)}
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), part
    G = ema_generator(state, cfg, ImageSet(images, labels.astype("float32")))
    lo, hi = (generate(G, torch.full((8,), y), seed=3) for y in (0.05, 0.95))
    assert (lo.float() - hi.float()).abs().mean() > 1.0  # same z, another label: other images


def test_classification_refuses_the_y2h_label_input():
    with pytest.raises(ConfigError, match="label input for regression"):
        load_config("rayflow/configs/tiny.yaml", ["gan.label_input=y2h"])
    with pytest.raises(ConfigError, match="label_embedding mlp"):
        load_config(REG, ["gan.label_input=y2h", "gan.label_embedding=sinusoidal"])


def test_label_input_keys_the_gan_only_when_y2h():
    """Default: not dumped, no y2h node, the GAN's key as pinned before the option existed; y2h:
    the GAN (and what it feeds) re-keyed through its new input, the teacher not."""
    cfg, same = load_config(REG), load_config(REG, ["gan.label_input=joint", "gan.y2h_steps=2000"])
    assert "label_input" not in cfg.gan.model_dump() and "y2h" not in node_inputs(cfg, Node.of("gan"))
    assert node_key(cfg, Node.of("gan")) == node_key(same, Node.of("gan")) == "5cc2431d2d62"  # main's key
    on = load_config(REG, ["gan.label_input=y2h"])
    assert node_inputs(on, Node.of("gan"))["y2h"] == Node.of("y2h")
    assert node_key(on, Node.of("teacher")) == node_key(cfg, Node.of("teacher"))
    for n in (Node.of("gan"), pool_node(True)):
        assert node_key(on, n) != node_key(cfg, n)
    steps = load_config(REG, ["gan.label_input=y2h", "gan.y2h_steps=100"])
    assert node_key(steps, Node.of("y2h")) != node_key(on, Node.of("y2h"))
    assert node_key(steps, Node.of("gan")) != node_key(on, Node.of("gan"))

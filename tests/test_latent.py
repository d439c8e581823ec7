"""The diversity lever: the synth pool's latent scale and truncation (synth.latent_scale,
synth.truncation). Defaults draw exactly today's z and keep every key; set, they re-key the pool
and everything built on it. No Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayflow.ablation import ABLATION, CGAN_KD
from rayflow.config import load_config
from rayflow.gan.generator import GeneratorSpec
from rayflow.gan.loop import generate, latent
from rayflow.stages.graph import Node, node_key
from rayflow.stages.synth import pool_node
from rayflow.synth.udfs import Generate


def test_default_latent_is_the_old_draw():
    assert torch.equal(latent(50, 8, seed=7), torch.randn(50, 8, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("scale", [0.5, 1.7])
def test_latent_scale_multiplies_the_std(scale):
    base, z = latent(20_000, 16, seed=1).std().item(), latent(20_000, 16, seed=1, scale=scale).std().item()
    assert abs(base - 1) < 0.01 and z / base == pytest.approx(scale, rel=1e-5)


def test_truncation_bounds_every_coordinate():
    z = latent(5000, 16, seed=2, scale=1.5, truncation=0.8)
    plain = latent(5000, 16, seed=2, scale=1.5)
    assert z.abs().max() <= 0.8 and plain.abs().max() > 0.8
    inside = plain.abs() <= 0.8
    assert torch.equal(z[inside], plain[inside])  # only the coordinates outside are redrawn
    assert z.std() > 0.4  # redrawn, not clipped to a few values
    with pytest.raises(ValueError, match="> 0"):
        latent(2, 2, seed=0, truncation=0.0)


def test_the_pool_step_draws_with_the_latent_settings():
    spec = GeneratorSpec(3, z_dim=8, base_channels=8, out_channels=1, image_size=8)
    state = spec().state_dict()
    plain = Generate(spec, state, batch_size=16).draw(1, 16, seed=5)
    assert torch.equal(plain, generate(Generate(spec, state, batch_size=16).G, torch.full((16,), 1), seed=5))
    wide = Generate(spec, state, batch_size=16, latent_scale=2.0).draw(1, 16, seed=5)
    assert not torch.equal(plain, wide)


def test_latent_settings_key_the_pool_only_when_set():
    """Default: no dump, every key kept; set: the pools and what reads them re-keyed, the teacher,
    GAN and real-image students not."""
    cfg = load_config("rayflow/configs/tiny.yaml")
    assert not {"latent_scale", "truncation"} & set(cfg.synth.model_dump())
    assert cfg.synth.latent_kwargs() == {}
    same = load_config("rayflow/configs/tiny.yaml", ["synth.latent_scale=1.0"])
    fixed = [Node.of("teacher"), Node.of("gan"), Node.of("nokd", seed=0), Node.of("blkd", seed=0),
             Node.of("fm", seed=0)]
    built = [pool_node(False), pool_node(True), ABLATION[0].fake_set(), CGAN_KD.student(0)]
    for over in (["synth.latent_scale=1.5"], ["synth.truncation=1.0"]):
        other = load_config("rayflow/configs/tiny.yaml", over)
        key = over[0].split("=")[0].split(".")[1]
        assert key in other.synth.model_dump() and key in other.synth.latent_kwargs()
        assert all(node_key(other, n) == node_key(cfg, n) for n in fixed)
        assert all(node_key(other, n) != node_key(cfg, n) for n in built), over
    assert all(node_key(same, n) == node_key(cfg, n) for n in fixed + built)

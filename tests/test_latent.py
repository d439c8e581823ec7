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


def test_latent_scale_is_a_tune_knob_whose_trials_read_their_own_pool(tmp_path):
    """tune.latent_scale: a log-scale search dimension setting synth.latent_scale. Each trial's
    stage graph keys its pool by its scale (scale 1 is the default pool, key unchanged), and the
    driver's pre-trial pools (servable, bound) are the very ones its trials read. Not dumped unset."""
    from rayflow.stages.runner import Runner
    from rayflow.tuning.pools import pool_groups
    from rayflow.tuning.search import space_of, with_params

    tiny = "rayflow/configs/tiny.yaml"
    local = [f"output_dir={tmp_path}", "runtime.executor=local"]
    cfg = load_config(tiny, ["tune.latent_scale=[0.5, 2]", "tune.grid=[2, 1, 1, 1, 1, 1, 3]", *local])
    grid = space_of(cfg).grid(*cfg.tune.grid)
    assert len(grid) == 6 and sorted({c["latent_scale"] for c in grid}) == pytest.approx([0.5, 1.0, 2.0])
    trials = [with_params(cfg, c, validation=True) for c in grid]
    assert [t.synth.latent_scale for t in trials] == [c["latent_scale"] for c in grid]
    pools = {c["latent_scale"]: node_key(t, pool_node(True)) for c, t in zip(grid, trials)}
    assert len(set(pools.values())) == 3
    default = with_params(load_config(tiny, local), {}, validation=True)
    assert pools[1.0] == node_key(default, pool_node(True))
    assert node_key(trials[0], Node.of("gan")) == node_key(default, Node.of("gan"))  # the GAN is shared
    groups = pool_groups(Runner(default), cfg, grid)
    assert sorted(len(idx) for _, idx in groups) == [2, 2, 2]
    for r, idx in groups:
        assert {r.key_of(pool_node(True))} == {pools[grid[i]["latent_scale"]] for i in idx}
    assert "latent_scale" not in load_config(tiny).tune.model_dump()
    with pytest.raises(Exception, match="positive latent scales"):
        load_config(tiny, ["tune.latent_scale=[0, 2]"])


@pytest.mark.parametrize("searcher", ["grid", "random", "tpe", "bound"])
def test_every_searcher_proposes_latent_scales(searcher):
    from rayflow.search import SearchSpace, make_searcher

    space = SearchSpace(rho=(0.5, 1.0), m=(10, 10), latent_scale=(0.5, 2.0))
    assert space.values("latent_scale") == pytest.approx([0.5, 1.0, 2.0])  # geometric: 1 in the middle
    assert space.to_unit({"rho": 1.0, "m": 10, "latent_scale": 1.0})[2] == pytest.approx(0.5)
    grid = space.grid(2, 1, n_latent_scale=3)
    prior = {space.key(c): c["latent_scale"] for c in grid}  # the bound prefers small scales
    s = make_searcher(searcher, space, seed=1, candidates=grid, prior=prior if searcher == "bound" else None)
    asked = []
    while (c := s.ask()) is not None:
        s.tell(c, 1.0 / c["latent_scale"])
        asked.append(c)
    assert sorted(space.key(c) for c in asked) == sorted(space.key(c) for c in grid)
    if searcher == "bound":
        assert asked[0]["latent_scale"] == 0.5
    draws = [space.sample(i)["latent_scale"] for i in range(400)]
    assert min(draws) >= 0.5 and max(draws) <= 2.0 and 0.4 < np.mean(np.array(draws) < 1.0) < 0.6  # log-uniform

"""cGAN stage: Ray Train (DDP-ready) driver checkpoints, and a restarted run resumes."""

import pytest
import torch

from rayflow.config import load_config
from rayflow.stages.gan import run_gan_training


def _cfg(tmp_path, executor, steps):
    return load_config("rayflow/configs/tiny.yaml", [f"output_dir={tmp_path}", f"runtime.executor={executor}",
                                                      f"gan.steps={steps}", "gan.checkpoint_every=10"])


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_gan_training_checkpoints_and_resumes(executor, tmp_path, digits, request):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    out1, out2 = tmp_path / "a", tmp_path / "b"
    out1.mkdir(), out2.mkdir()
    first = run_gan_training(_cfg(tmp_path, executor, 20), digits.train, None, "gan-resume", out1)
    assert first["step"] == 20 and (out1 / "g_ema.safetensors").is_file()
    assert sorted(p.name for p in out1.glob("samples_*.png"))[-1] == "samples_step000020.png"
    # Same run name, longer schedule: picks up the step-20 checkpoint and runs only 10 more steps.
    second = run_gan_training(_cfg(tmp_path, executor, 30), digits.train, None, "gan-resume", out2)
    assert second["step"] == 30
    assert [c["step"] for c in second["curve"]] == [30]


def test_same_config_trains_the_same_gan(tmp_path, digits):
    from safetensors.torch import load_file

    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        run_gan_training(_cfg(tmp_path, "local", 10), digits.train, None, f"gan-same-{run}", out)
        outs.append(load_file(out / "g_ema.safetensors"))
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_select_checkpoint_prefers_label_consistency():
    from rayflow.stages.gan import select_checkpoint

    cands = [({"step": 1000, "label_consistency": 77.0}, "a"), ({"step": 4000, "label_consistency": 98.9}, "b"),
             ({"step": 5000, "label_consistency": 81.4}, "c")]
    assert select_checkpoint(cands, "best_consistency")[1] == "b"
    assert select_checkpoint(cands, "last")[1] == "c"
    assert select_checkpoint([({"step": 10}, "x"), ({"step": 20}, "y")], "best_consistency")[1] == "y"


def test_select_checkpoint_best_fid_respects_the_consistency_floor():
    from rayflow.stages.gan import select_checkpoint

    cands = [({"step": 1000, "label_consistency": 70.0, "fid_teacher_features": 3.0}, "a"),
             ({"step": 2000, "label_consistency": 90.0, "fid_teacher_features": 6.0}, "b"),
             ({"step": 3000, "label_consistency": 99.0, "fid_teacher_features": 9.0}, "c")]
    assert select_checkpoint(cands, "best_fid", 85.0)[1] == "b"  # "a" is more diverse but off-condition
    assert select_checkpoint(cands, "best_fid", 60.0)[1] == "a"
    assert select_checkpoint(cands, "best_fid", 99.5)[1] == "c"  # nobody clears the floor: most consistent


def test_for_sampling_recalibrates_a_copy():
    import torch

    from rayflow.config import GANConfig
    from rayflow.gan import build_gan
    from rayflow.stages.gan import for_sampling

    cfg = GANConfig(g_channels=8, d_channels=8, z_dim=8)
    G = build_gan(cfg, 3, 1, 16).G
    before = {k: v.clone() for k, v in G.state_dict().items()}
    g = for_sampling(G, cfg, 3)
    assert not g.training and all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    # fresh BN buffers (mean 0, var 1) are replaced by statistics of G's own samples
    assert not torch.equal(g.out_bn.running_var, G.out_bn.running_var)
    same = for_sampling(G, cfg.model_copy(update={"recalibrate_bn": False}), 3)
    assert torch.equal(same.out_bn.running_var, G.out_bn.running_var)


def test_select_per_class_routes_a_collapsed_class_to_another_checkpoint():
    from rayflow.stages.gan import select_checkpoint, select_per_class

    # step 2000 has the best FID but class 1 collapsed there; step 3000 has class 1 right.
    cands = [({"step": 1000, "label_consistency": 60.0, "label_consistency_per_class": [40.0, 80.0],
               "fid_teacher_features": 9.0}, "a"),
             ({"step": 2000, "label_consistency": 50.0, "label_consistency_per_class": [100.0, 0.0],
               "fid_teacher_features": 5.0}, "b"),
             ({"step": 3000, "label_consistency": 92.5, "label_consistency_per_class": [95.0, 90.0],
               "fid_teacher_features": 7.0}, "c")]
    assert select_checkpoint(cands, "per_class", 85.0)[1] == "c"  # the one state kept: best_fid's
    assert [d for _, d in select_per_class(cands, 85.0, 2)] == ["b", "c"]
    # no checkpoint clears the floor for class 1: the one most consistent on it
    assert [d for _, d in select_per_class(cands, 95.0, 2)] == ["b", "c"]
    assert [d for _, d in select_per_class(cands, 99.0, 2)] == ["b", "c"]
    assert [d for _, d in select_per_class(cands, 0.0, 2)] == ["b", "b"]  # no floor: lowest FID throughout


def _two_checkpoints(tmp_path):
    import torch

    from rayflow.checkpoint import save_state
    from rayflow.config import GANConfig
    from rayflow.gan import build_gan

    cfg = GANConfig(g_channels=8, d_channels=8, z_dim=8, recalibrate_bn=False)
    picks = []
    for step in (10, 20):
        st = build_gan(cfg, 3, 1, 16)
        st.step = step
        state = st.state_dict()
        gen = torch.Generator().manual_seed(step)  # two different generators
        for v in state["G_ema"]["model"].values():
            if v.is_floating_point():
                v.add_(0.05 * torch.randn(v.shape, generator=gen))
        d = tmp_path / f"ckpt_{step}"
        d.mkdir()
        save_state(state, d / "state.pt")
        picks.append(({"step": step}, d))
    return cfg, picks


def test_routed_generator_draws_each_class_from_its_checkpoint_and_reloads(tmp_path):
    import json
    from types import SimpleNamespace

    import torch

    from rayflow.checkpoint import load_state, save_weights
    from rayflow.gan import ClassRoutedGenerator, generate
    from rayflow.stages.gan import ARCH, G_EMA, ema_generator, load_generator, routed_generator

    cfg, (p10, p20) = _two_checkpoints(tmp_path)
    train = SimpleNamespace(shape=(1, 16, 16), num_classes=3)
    G = routed_generator([p20, p10, p20], cfg, train)  # class 1 from step 10, classes 0 and 2 from step 20
    assert isinstance(G, ClassRoutedGenerator) and G.routes.tolist() == [1, 0, 1]
    g10, g20 = (ema_generator(load_state(d / "state.pt"), cfg, train).eval() for _, d in (p10, p20))
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    z = torch.randn(len(y), cfg.z_dim)
    with torch.no_grad():
        out, a, b = G(z, y), g10(z, y), g20(z, y)
    assert not torch.allclose(a, b)
    for i, c in enumerate(y.tolist()):
        torch.testing.assert_close(out[i], (a if c == 1 else b)[i])
    # the artifact form: weights + route_steps in gan.json, back to the same sampler
    save_weights(G.state_dict(), tmp_path / G_EMA)
    (tmp_path / ARCH).write_text(json.dumps({"num_classes": 3, "in_channels": 1, "image_size": 16, "z_dim": 8,
                                             "g_channels": 8, "route_steps": [20, 10, 20]}))
    again = load_generator(tmp_path)
    assert torch.equal(generate(again, y, seed=3), generate(G, y, seed=3))
    # every class on one checkpoint: the plain generator, no routing
    assert not isinstance(routed_generator([p10, p10, p10], cfg, train), ClassRoutedGenerator)

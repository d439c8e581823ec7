"""cGAN training on both executors: checkpoints, resume from the committed record, selection."""

import pytest
import torch

from rayflow.config import ScalingConfig, load_config
from rayflow.executors import get_executor
from rayflow.gan.training import gan_worker


def _cfg(tmp_path, executor, steps):
    return load_config("rayflow/configs/tiny.yaml", [f"output_dir={tmp_path}", f"runtime.executor={executor}",
                                                      f"gan.steps={steps}", "gan.checkpoint_every=10"])


def _train(cfg, train, name):
    """One GAN training run on the config's executor: the FitResult (committed checkpoints)."""
    return get_executor(cfg.runtime).fit(gan_worker, {"gan": cfg.gan, "train": train, "teacher_dir": None,
                                                      "name": name}, name=name, scaling=ScalingConfig(),
                                         storage=(str(cfg.output_dir), None), keep=None)


def _steps(res):
    out = []
    for ck in res.checkpoints:
        with ck.open() as d:
            out.append((int(torch.load(d / "state.pt", weights_only=True)["step"]),
                        sorted(p.name for p in d.glob("samples_*.png"))))
    return out


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_gan_training_checkpoints_and_resumes(executor, tmp_path, digits, request):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    first = _train(_cfg(tmp_path, executor, 20), digits.train, "gan-resume")
    assert first.return_value["step"] == 20
    assert _steps(first) == [(10, ["samples_step000010.png"]), (20, ["samples_step000020.png"])]
    # Same run name, longer schedule: picks up the step-20 checkpoint and runs only 10 more steps.
    second = _train(_cfg(tmp_path, executor, 30), digits.train, "gan-resume")
    assert second.return_value["step"] == 30
    assert [c["step"] for c in second.return_value["curve"]] == [30]
    assert [s for s, _ in _steps(second)] == [10, 20, 30]


def test_local_resume_ignores_checkpoints_outside_the_record(tmp_path, digits):
    """A checkpoint directory a killed run wrote after its last record update is never resumed
    from nor offered to the selection (the reliability issue's orphaned step-60 case)."""
    import shutil

    cfg = _cfg(tmp_path, "local", 20)
    first = _train(cfg, digits.train, "gan-orphan")
    run = tmp_path / "gan-orphan"
    shutil.copytree(run / "checkpoint_000000", run / "checkpoint_000002")  # step 10 again, not in the record
    second = _train(_cfg(tmp_path, "local", 30), digits.train, "gan-orphan")
    assert [c["step"] for c in second.return_value["curve"]] == [30]  # resumed from 20, the record's newest
    assert [s for s, _ in _steps(second)] == [10, 20, 30] and len(first.checkpoints) == 2


def test_same_config_trains_the_same_gan(tmp_path, digits):
    outs = []
    for run in ("a", "b"):
        res = _train(_cfg(tmp_path, "local", 10), digits.train, f"gan-same-{run}")
        with res.checkpoints[-1].open() as d:
            outs.append(torch.load(d / "state.pt", weights_only=True)["G_ema"]["model"])
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_select_checkpoint_prefers_label_consistency():
    from rayflow.gan.selection import select_checkpoint

    cands = [({"step": 1000, "label_consistency": 77.0}, "a"), ({"step": 4000, "label_consistency": 98.9}, "b"),
             ({"step": 5000, "label_consistency": 81.4}, "c")]
    assert select_checkpoint(cands, "best_consistency")[1] == "b"
    assert select_checkpoint(cands, "last")[1] == "c"
    assert select_checkpoint([({"step": 10}, "x"), ({"step": 20}, "y")], "best_consistency")[1] == "y"


def test_select_checkpoint_best_fid_respects_the_consistency_floor():
    from rayflow.gan.selection import select_checkpoint

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
    from rayflow.gan.sampling import for_sampling

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
    from rayflow.gan.selection import select_checkpoint, select_per_class

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
        picks.append((step, state))
    return cfg, picks


def test_routed_generator_draws_each_class_from_its_checkpoint_and_reloads(tmp_path):
    import json
    from types import SimpleNamespace

    import torch

    from rayflow.checkpoint import save_weights
    from rayflow.gan import ClassRoutedGenerator, generate
    from rayflow.gan.artifact import ARCH, G_EMA, load_generator, routed_generator
    from rayflow.gan.sampling import ema_generator

    cfg, (p10, p20) = _two_checkpoints(tmp_path)
    train = SimpleNamespace(shape=(1, 16, 16), num_classes=3)
    G = routed_generator([p20, p10, p20], cfg, train)  # class 1 from step 10, classes 0 and 2 from step 20
    assert isinstance(G, ClassRoutedGenerator) and G.routes.tolist() == [1, 0, 1]
    g10, g20 = (ema_generator(st, cfg, train).eval() for _, st in (p10, p20))
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

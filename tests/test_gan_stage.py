"""cGAN stage: Ray Train (DDP-ready) driver checkpoints, and a restarted run resumes."""

import pytest

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

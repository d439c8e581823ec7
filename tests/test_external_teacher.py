"""Bring your own teacher: a plain-torch network from outside rayflow (tests/user_teacher.py),
imported through `teacher.checkpoint`, used by every stage that uses a teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from user_teacher import FACTORY, PKG, preprocess, untrained, user_teacher  # noqa: F401  (fixture)

from rayflow.config import ConfigError, load_config
from rayflow.stages.graph import Node, node_key

TINY = str(Path(__file__).parents[1] / "rayflow" / "configs" / "tiny.yaml")


def cfg_with(tmp: Path, ut, *sets: str, **ck):
    return load_config(TINY, [f"output_dir={tmp / 'out'}", "runtime.executor=local", *ut.sets(**ck), *sets])


def adapter(ut, **extra):
    from rayflow.config_teacher import TeacherCheckpoint
    from rayflow.stages.teacher_import import check

    return check(TeacherCheckpoint(**ut.checkpoint(**extra)), (1, 16, 16), 10)


def test_adapter_gives_the_plain_modules_logits_on_its_own_preprocessing(user_teacher):
    x = torch.rand(5, 1, 16, 16) * 2 - 1  # rayflow's images: [-1, 1] at data.image_size
    model = adapter(user_teacher)
    with torch.no_grad():
        want = user_teacher.net(preprocess(x))
        got, feats = model(x, return_features=True)
        hidden = user_teacher.net.hidden(user_teacher.net.body(preprocess(x)))
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[-1], hidden)  # the input of the last nn.Linear: the embedding
    assert model.feature_dim == 32 and len(feats) == 1


def test_resize_and_normalisation_numerically(user_teacher):
    model = adapter(user_teacher)
    x = torch.full((1, 1, 16, 16), 0.5)  # -> 0.75 in [0, 1] -> (0.75 - 0.3) / 0.35
    y = model.preprocess(x)
    assert y.shape == (1, 1, 12, 12)
    torch.testing.assert_close(y, torch.full_like(y, (0.75 - 0.3) / 0.35))
    # a ramp along the width, halved to 8 px: inside, each output pixel is the ramp at its centre
    halved = adapter(user_teacher, input_size=8, normalize=None)
    ramp = (torch.arange(16.0) / 15 * 2 - 1).expand(1, 1, 16, 16)
    z = halved.preprocess(ramp)[0, 0]
    centres = torch.tensor([(2 * j + 0.5) / 15 for j in range(1, 7)])
    torch.testing.assert_close(z[3, 1:7], centres)  # value_range [0, 1]: (x + 1) / 2
    ranged = adapter(user_teacher, value_range=[0, 255], normalize=None, input_size=16)
    edge = ranged.preprocess(torch.full((1, 1, 16, 16), -1.0))
    torch.testing.assert_close(edge, torch.zeros_like(edge))  # -1 -> 0, +1 -> 255, no resize at 16
    top = ranged.preprocess(torch.ones(1, 1, 16, 16))
    torch.testing.assert_close(top, torch.full_like(top, 255.0))


def test_feature_layer_and_maps_by_name(user_teacher):
    model = adapter(user_teacher, feature_layer="hidden", feature_layers=["body.1", "body.4"])
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        _, feats = model(x, return_features=True)
        body1 = user_teacher.net.body[:2](preprocess(x))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 12, 12), (2, 16, 6, 6), (2, 32)]
    torch.testing.assert_close(feats[0], body1)


def test_imported_teacher_is_scored_not_trained_and_keyed_by_content(user_teacher, tmp_path, digits):
    from rayflow.models.io import load_model, read_arch
    from rayflow.stages.runner import Runner

    cfg = cfg_with(tmp_path, user_teacher)
    art = Runner(cfg).artifact(Node.of("teacher"))
    assert art.metrics["imported"] == 1 and "steps" not in art.metrics
    assert art.metrics["test_acc"] > 60, art.metrics  # a trained teacher, far above chance (10 %)
    assert read_arch(art.path)["name"] == "external"
    loaded = load_model(art.path)
    x = torch.tensor(digits.test.images[:8]).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), user_teacher.net(preprocess(x)), rtol=1e-4, atol=1e-4)
    # the same weights as safetensors: the same network; other bytes: another teacher key
    same = cfg_with(tmp_path, user_teacher, weights=user_teacher.safetensors)
    assert Runner(same).artifact(Node.of("teacher")).metrics["test_acc"] == art.metrics["test_acc"]
    changed = tmp_path / "changed.pt"
    state = torch.load(user_teacher.pt, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1
    torch.save(state, changed)
    k1 = node_key(cfg_with(tmp_path, user_teacher, weights=changed), Node.of("teacher"))
    torch.save(torch.load(user_teacher.pt, weights_only=True), changed)  # same path, the original bytes
    k2 = node_key(cfg_with(tmp_path, user_teacher, weights=changed), Node.of("teacher"))
    assert k1 != k2  # one path, other bytes: another teacher
    # a rayflow model artifact as the checkpoint: the same teacher again
    from_dir = load_config(TINY, [f"output_dir={tmp_path / 'out2'}", "runtime.executor=local",
                                  f"teacher.checkpoint.artifact={art.path}"])
    again = Runner(from_dir).artifact(Node.of("teacher"))
    assert again.metrics["test_acc"] == art.metrics["test_acc"] and again.key != art.key


def test_default_teacher_dump_has_no_checkpoint(tmp_path):
    cfg = load_config(TINY, [f"output_dir={tmp_path}"])
    assert "checkpoint" not in cfg.teacher.model_dump()


def test_dre_features_and_synth_labelling_with_the_external_teacher(user_teacher, tmp_path):
    """cGAN -> cDR-RS on the teacher's features -> filtered, relabelled fake set (local executor)."""
    from rayflow.stages.runner import Runner
    from rayflow.stages.synth import view_files

    cfg = cfg_with(tmp_path, user_teacher, "dre.feature_net.name=teacher", "gan.steps=40",
                   "gan.checkpoint_every=20", "synth.m_per_class=10", "synth.pool_draws=60")
    runner = Runner(cfg)
    dre = runner.artifact(Node.of("dre"))
    assert json.loads((Path(dre.path) / "dre.json").read_text())["feature_dim"] == 32  # the hooked embedding
    view = runner.artifact(Node.of("view", subsample=True, filter=True, relabel=True))
    rows = view_files(runner, view)
    assert len(rows["label"]) == 100 and set(np.unique(rows["label"])) <= set(range(10))


def test_kd_method_needing_maps_is_refused_with_an_external_teacher(user_teacher, tmp_path):
    from rayflow.kd_table import preflight

    cfg = cfg_with(tmp_path, user_teacher, "student.model.name=resnet8", "fake.kd_weight=0",
                   "student.kd=[{method: at}]")
    with pytest.raises(ConfigError, match="student.kd: KD method 'at' cannot use the external teacher: it "
                                          "exposes only logits and penultimate features"):
        preflight(cfg, (1, 16, 16), 10)
    ok = cfg_with(tmp_path, user_teacher, "student.model.name=resnet8", "fake.kd_weight=0",
                  "student.kd=[{method: at}]", feature_layers=["body.1", "body.4"])
    preflight(ok, (1, 16, 16), 10)  # named layers: AT gets the teacher's maps
    preflight(cfg_with(tmp_path, user_teacher, "fake.kd_weight=0", "student.kd=[{method: pkt}]"), (1, 16, 16), 10)


def test_student_from_an_import_path_trains(user_teacher, tmp_path):
    """The same mechanism for the student: the user's module, fed rayflow's images as they are."""
    from rayflow.models.io import load_model, read_arch
    from rayflow.stages.runner import Runner

    cfg = cfg_with(tmp_path, user_teacher, f"student.model={{name: '{FACTORY}', kwargs: {{width: 8}}, "
                                           f"modules: ['{user_teacher.pkg}']}}",
                   "student.train.steps=100", "student.train.optim={name: adam, lr: 0.003}")
    art = Runner(cfg).artifact(Node.of("nokd", seed=0))
    assert read_arch(art.path)["name"] == FACTORY
    assert art.metrics["test_acc"] > 20, art.metrics  # it learnt (chance: 10 %)
    net = load_model(art.path)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.slow
def test_ray_workers_import_the_users_module_through_py_modules(user_teacher, tmp_path):
    """A fresh `python -m rayflow` (embedded Ray) whose only way to the user's package is the config:
    the BLKD student's Train worker builds the external teacher online."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    cmd = [sys.executable, "-m", "rayflow", "stage", "blkd", "--param", "seed=0", "--config", TINY,
           "--set", f"output_dir={tmp_path / 'out'}", "--set", "student.train.steps=20",
           "--set", "runtime.executor=ray", *sum((["--set", s] for s in user_teacher.sets()), [])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    arts = list((tmp_path / "out").rglob("blkd/*/model.safetensors"))
    assert arts, r.stderr[-2000:]
    origins = [line.split(" imported from ")[1] for line in (r.stdout + r.stderr).splitlines()
               if f"{PKG} imported from" in line]
    shipped = [o for o in origins if not o.startswith(str(user_teacher.root))]
    assert shipped, origins  # a worker imported the package from Ray's py_modules copy


def test_the_users_package_goes_into_the_workers_py_modules(user_teacher, tmp_path, monkeypatch, caplog):
    """Resolving the config registers the package; init_ray's runtime_env ships it, unless a submitted
    job's runtime_env sets py_modules itself (Ray refuses the merge): then it says what must be there."""
    from rayflow import runtime, user_code

    monkeypatch.setattr(user_code, "_SHIPPED", [])
    cfg_with(tmp_path, user_teacher)
    assert user_code.shipped() == [str(user_teacher.pkg.resolve())]
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    env: dict = {}
    runtime._add_py_modules(env, ["/src/rayflow"])
    assert env["py_modules"] == ["/src/rayflow", str(user_teacher.pkg.resolve())]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"py_modules": ["/job/x"]}}))
    env = {"env_vars": {"A": "1"}}
    runtime._add_py_modules(env, [])
    assert env == {"env_vars": {"A": "1"}}
    assert "the job's runtime_env sets py_modules" in caplog.text and PKG in caplog.text


def test_rgb_teacher_per_channel_normalisation(tmp_path):
    """3 channels, 32 px data into a 24 px teacher with ImageNet-style mean/std per channel."""
    import importlib

    from rayflow.config_teacher import TeacherCheckpoint
    from rayflow.models.external import external

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    TeacherCheckpoint(**untrained(tmp_path / "u").checkpoint(kwargs={"in_ch": 3}, input_size=24, normalize={"mean": mean,
                                                                                               "std": std}))
    model = external(3, 32, 10, FACTORY, kwargs={"in_ch": 3}, input_size=24, value_range=(0, 1),
                     normalize={"mean": mean, "std": std}).eval()
    plain = importlib.import_module(f"{PKG}.net").build(in_ch=3)
    plain.load_state_dict({k.removeprefix("net."): v for k, v in model.state_dict().items()})
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    small = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", antialias=True)
    want_in = ((small + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.preprocess(x), want_in)
        torch.testing.assert_close(model(x), plain.eval()(want_in), rtol=1e-5, atol=1e-5)

"""Ablation rows for the cGAN-KD levers (`lever_rows`): one more cGAN-KD student per lever, that
lever alone on, planned beside the others (same batch) without re-keying any existing row; in the
summary's ablation and the report, never the headline. No training."""

from __future__ import annotations

import pytest

from rayflow import ablation, levers
from rayflow.ablation import CGAN_KD
from rayflow.config import load_config
from rayflow.pipeline import Pipeline
from rayflow.report import render_report, summarize
from rayflow.report.headline import produced
from rayflow.stages.graph import node_key

TINY = "rayflow/configs/tiny.yaml"
ALL = "lever_rows=[mix, select_fakes, latent_scale]"


@pytest.fixture
def local(tmp_path):
    return [f"output_dir={tmp_path}", "runtime.executor=local"]


def _planned(cfg):
    return [(seed, label, node_key(r.cfg, n)) for seed, label, r, n in Pipeline(cfg).students(ablation.plan(cfg))]


def test_lever_rows_are_planned_with_their_lever_alone(local):
    base, cfg = load_config(TINY, local), load_config(TINY, [*local, ALL])
    plain, plan = _planned(base), _planned(cfg)
    assert plan[:len(plain)] == plain  # every existing row, and its key, unchanged
    extra = Pipeline(cfg).students(ablation.plan(cfg))[len(plain):]
    assert [label for _, label, _, _ in extra] == ["cGAN-KD with mixing (mixup, alpha 1)",
                                                   "cGAN-KD with useful fakes (entropy, top 0.5)",
                                                   "cGAN-KD with latent scale 1.5"]
    assert all(n == CGAN_KD.student(0) for *_, n in extra)
    # each row is the student a run with that lever set by --set trains: the same key (and artifact)
    same_as = (["student.mix.kind=mixup", "student.mix.alpha=1"],
               ["student.select_fakes.by=entropy", "student.select_fakes.share=0.5", "student.select_fakes.every=50"],
               ["synth.latent_scale=1.5"])
    keys = [node_key(r.cfg, n) for _, _, r, n in extra]
    assert keys == [node_key(load_config(TINY, [*local, *o]), CGAN_KD.student(0)) for o in same_as]
    assert len({*keys, node_key(base, CGAN_KD.student(0))}) == 4
    mix, sel, lat = (r.cfg for _, _, r, _ in extra)
    assert (mix.student.mix.kind, mix.student.select_fakes.on, mix.synth.latent_scale) == ("mixup", False, 1.0)
    assert (sel.student.select_fakes.by, sel.student.mix.on, sel.synth.latent_scale) == ("entropy", False, 1.0)
    assert (lat.synth.latent_scale, lat.student.mix.on, lat.student.select_fakes.on) == (1.5, False, False)
    assert extra[0][2] is not extra[1][2] and "lever_rows" in cfg.model_dump()


def test_a_configured_lever_keeps_its_setting_and_the_others_go_off(local):
    cfg = load_config(TINY, [*local, "student.mix.kind=cutmix", "student.mix.alpha=0.4", "student.select_fakes.by=kl",
                             "synth.latent_scale=0.7", "synth.truncation=2", "tune.mix_alpha=[0.2, 2]",
                             "lever_rows=[latent_scale, mix]"])
    lat, mix = levers.rows(cfg)
    assert lat.label == "cGAN-KD with latent scale 0.7, truncation 2"
    assert lat.setting() == {"synth.latent_scale": 0.7, "synth.truncation": 2.0}
    assert not lat.cfg.student.mix.on and not lat.cfg.student.select_fakes.on
    assert mix.label == "cGAN-KD with mixing (cutmix, alpha 0.4)" and mix.cfg.synth.latent_kwargs() == {}
    assert not mix.cfg.student.select_fakes.on and mix.setting() == {"student.mix": {"kind": "cutmix", "alpha": 0.4}}
    # the run's cGAN-KD student has every lever on: no row repeats it
    plan = Pipeline(cfg).students(ablation.plan(cfg))
    assert len({node_key(r.cfg, n) for _, label, r, n in plan if n == CGAN_KD.student(0)}) == 3
    with pytest.raises(ValueError, match="unknown lever"):
        levers.alone(cfg, "wider_gan")


def test_a_row_equal_to_the_run_shares_its_runner(local):
    cfg = load_config(TINY, [*local, "student.mix.kind=mixup", "lever_rows=[mix]"])
    p = Pipeline(cfg)
    plan = p.students(ablation.plan(cfg))
    (_, _, r, n), = [e for e in plan if e[1].startswith("cGAN-KD with")]
    assert r is p.runner and n == CGAN_KD.student(0)  # the same node: trained once, two rows


def test_lever_rows_join_the_ablation_not_the_headline():
    label = "cGAN-KD with mixing (mixup, alpha 1)"
    rows = [{"model": m, "test_acc": v, "seed": 0} for m, v in
            (("teacher", 90.0), ("NOKD student", 70.0), ("BLKD student", 75.0), ("perfect generator (oracle)", 80.0),
             (CGAN_KD.label, 74.0), (label, 79.0))]
    s = summarize(rows, "test_acc")
    assert [a["variant"] for a in s["ablation"]] == [CGAN_KD.label, label]
    assert s["headroom_recovered"] == pytest.approx(0.4)  # (74 - 70) / (80 - 70): the lever's row is no choice
    assert produced(CGAN_KD.label) and not produced(label)
    html = render_report({"name": "t", "metric": "test_acc", "rows": rows, **s})
    assert html.count(label) >= 2  # every model's table and the ablation's


def test_rows_a_task_cannot_train_are_refused_before_any_compute():
    from rayflow.config import ConfigError

    reg = "rayflow/configs/regression_tiny.yaml"
    for over in (["lever_rows=[mix, select_fakes]"], ["student.select_fakes.by=entropy"]):
        with pytest.raises(ConfigError, match="not for data.task regression"):
            load_config(reg, over)
    assert load_config(reg, ["lever_rows=[mix, latent_scale]"]).lever_rows == ["mix", "latent_scale"]
    with pytest.raises(ConfigError, match="more than once"):
        load_config(TINY, ["lever_rows=[mix, mix]"])


def test_the_latent_row_draws_at_its_scale_when_only_a_truncation_is_configured():
    """A configured truncation is kept; the scale is the row's default, not the run's 1 (the row would
    otherwise be the run's own cGAN-KD student under another name)."""
    cfg = load_config("rayflow/configs/tiny.yaml", ["synth.truncation=2", "lever_rows=[latent_scale]"])
    (row,) = levers.rows(cfg)
    assert row.cfg.synth.latent_scale == levers.DEFAULT_LATENT_SCALE and row.cfg.synth.truncation == 2
    assert "latent scale 1.5, truncation 2" in row.label
    assert node_key(row.cfg, CGAN_KD.student(0)) != node_key(cfg, CGAN_KD.student(0))


def test_a_lever_row_whose_fake_set_cannot_be_built_is_left_out_with_a_note(local):
    """A latent scale whose pool the ratio net rejects almost entirely ends that row, not the run."""
    from rayflow.synth.manifest import SynthError

    class Unbuildable:
        def artifact(self, node):
            raise SynthError("the ratio net rejected 99.9 % of the pool")

    cfg = load_config(TINY, [*local, ALL])
    p = Pipeline(cfg)
    plan = p.students(ablation.plan(cfg))
    latent = "cGAN-KD with latent scale 1.5"
    plan = [(s, label, Unbuildable() if label == latent else r, n) for s, label, r, n in plan]
    built = {id(r): r for _, label, r, _ in plan if label != latent and r is not p.runner}
    for r in built.values():  # the other rows' fake sets are the run's view: nothing is trained here
        r.artifact = lambda node: None
    notes: list[str] = []
    kept = p._buildable(plan, CGAN_KD, notes)
    assert [e for e in plan if e[1] != latent] == kept and len(kept) == len(plan) - len(cfg.seeds)
    assert notes == [f"{latent}: left out, its fake set could not be built (the ratio net rejected 99.9 % of the pool)"]

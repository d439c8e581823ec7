"""End to end on sklearn digits: every stage, the ablation rows, the report, and the cache."""

import json
import re
import subprocess
import sys

import pytest

from rayflow.config import load_config
from rayflow.pipeline import FM_ROW, Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    cfg = load_config("rayflow/configs/tiny.yaml", [f"output_dir={out}", "runtime.executor=local",
                                                      "dre.feature_net.name=teacher"])
    return out, cfg, Pipeline(cfg).run()


def test_pipeline_writes_report_with_every_row(tiny_run):
    out, _, results = tiny_run
    models = [r["model"] for r in results["rows"]]
    for name in ("teacher", "NOKD student", "BLKD student", FM_ROW, "perfect generator (oracle)",
                 "fake, no processing (conditioning labels)", "+ cDR-RS subsampling", "+ filtering (rho-quantile)",
                 "+ relabelling by the teacher", "cGAN-KD: + KD term on soft labels"):
        assert name in models
    assert all(r["test_acc"] > 50 for r in results["rows"])  # every model learned digits (chance 10 %)
    on_disk = json.loads((out / "results.json").read_text())
    assert len(on_disk["ablation"]) == 5 and "label_consistency" in on_disk["gan"]
    assert all(0 <= on_disk["gan"][k] <= 1 for k in ("precision", "recall", "coverage"))
    assert FM_ROW in {s["model"] for s in on_disk["summary"]}
    assert FM_ROW not in {a["variant"] for a in on_disk["ablation"]}
    assert len(on_disk["gan"]["route_steps"]) == 10  # gan.select: per_class, one checkpoint per digit
    html = (out / "report.html").read_text()
    assert "Ablation" in html and "Headroom diagnostic" in html and html.count("<img") >= 4
    assert "checkpoint (gan.select: per_class)" in html
    assert "coverage (mean over classes)" in html and "nearest real training image" in html
    full = results["synth"]["full"]  # the view cGAN-KD trains on: M per class, filtered, relabelled
    assert full["samples"] == 30 * 10 and all(k >= 30 for k in full["eligible_per_class"])
    assert full["label_consistency_final"] > full["label_consistency_orig"]  # relabelling by the teacher


def test_rerun_skips_every_finished_stage(tiny_run):
    out, cfg, _ = tiny_run
    r = subprocess.run([sys.executable, "-m", "rayflow", "run", "--config", "rayflow/configs/tiny.yaml",
                        "--executor", "local", "--set", f"output_dir={out}", "--set", "dre.feature_net.name=teacher"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wrote" not in r.stderr  # nothing rebuilt
    reused = r.stderr.count("reusing cached artifact ") + sum(
        int(n) for n in re.findall(r"reusing (\d+) cached artifacts", r.stderr))
    assert reused >= 12
    assert not re.search(r"\] \d+/\d+ steps", r.stdout)  # no training step ran


def test_one_stage_with_overrides_gets_the_pipelines_artifacts(tiny_run):
    """What a Tune trial does: build one node under its own overrides. Everything upstream that the
    overrides do not touch is the pipeline's own artifact; an untouched node is the very same one."""
    from rayflow.ablation import CGAN_KD
    from rayflow.stages.graph import Node
    from rayflow.stages.runner import Runner

    out, cfg, results = tiny_run
    row = next(r for r in results["rows"] if r["model"] == CGAN_KD.label)
    same = Runner(cfg).artifact(CGAN_KD.student(0))
    assert same.reused and same.uri == row["artifact"] and same.metrics["test_acc"] == row["test_acc"]

    trial = Runner(load_config("rayflow/configs/tiny.yaml", [f"output_dir={out}", "runtime.executor=local",
                                                              "dre.feature_net.name=teacher", "filter.rho=0.5"]))
    student = trial.artifact(CGAN_KD.student(0))
    assert not student.reused and student.uri != row["artifact"] and student.metrics["test_acc"] > 50
    for n in (Node.of("teacher"), Node.of("gan"), Node.of("dre"), Node.of("pool", subsample=True, segment=0)):
        assert trial.artifact(n).reused, n  # rho is read by the view only: nothing above it rebuilt
    view = trial.artifact(CGAN_KD.fake_set())
    assert view.metrics["rho"] == 0.5 and view.metrics["eligible_per_class"] != \
        results["synth"]["full"]["eligible_per_class"]  # the trial's own, stricter filter

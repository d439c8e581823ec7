"""Whole runs against the artifact store: concurrent runs on one output, an S3 output, a bad output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from s3_server import s3_location, s3_server  # noqa: F401  (fixtures)

from rayflow.config import load_config

pytestmark = pytest.mark.slow

TINY = ["--config", "tiny", "--executor", "local", "--set", "dre.feature_net.name=teacher"]


def _rayflow(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rayflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_two_runs_on_one_output_build_each_artifact_once(tmp_path):
    """Both runs want the same teacher and NOKD student: one trains them, the other waits on the
    build locks and reuses what it finds committed; nobody reads a half artifact."""
    cmd = ("train-student", *TINY, "--set", f"output_dir={tmp_path}", "--set", "teacher.train.steps=60",
           "--set", "student.train.steps=300")
    a, b = _rayflow(*cmd), _rayflow(*cmd)
    outs = [p.communicate(timeout=300) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    stdout, stderr = "".join(o for o, _ in outs), "".join(e for _, e in outs)
    assert stderr.count("[nokd] wrote ") == 1  # the student trained once, in one of the two runs
    assert stdout.count(", cached)") == 1
    assert any("waiting for another process" in e for _, e in outs)
    arts = list((tmp_path / "artifacts" / "nokd").glob("nokd-*"))
    assert len(arts) == 1 and (arts[0] / "_COMMITTED").is_file() and (arts[0] / "model.safetensors").is_file()


def test_tiny_pipeline_on_s3_store_and_cached_rerun(s3_location, tmp_path):  # noqa: F811
    from rayflow.pipeline import Pipeline
    from rayflow.store import open_store

    over = [f"output_dir={s3_location}", "runtime.executor=local", "dre.feature_net.name=teacher",
            "teacher.train.steps=60", "student.train.steps=60", "seeds=[0]"]
    results = Pipeline(load_config("rayflow/configs/tiny.yaml", over)).run()
    assert all(r["artifact"].startswith(s3_location) for r in results["rows"])
    store = open_store(s3_location)
    assert json.loads(store.read_text("results.json"))["rows"][0]["model"] == "teacher"
    assert "<h1>rayflow: tiny</h1>" in store.read_text("report.html")
    again = Pipeline(load_config("rayflow/configs/tiny.yaml", over)).run()
    assert all(r["reused"] for r in again["rows"])  # every model came from the store
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in results["rows"]]


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unwritable_output_fails_in_one_line_before_compute(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    out = blocker if where == "file" else blocker / "sub"
    p = _rayflow("train-teacher", *TINY, "--set", f"output_dir={out}")
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 2 and stderr.strip().count("\n") == 0, stderr
    assert stderr.startswith(f"rayflow: error: output location {out}") and "steps (" not in stdout  # no training

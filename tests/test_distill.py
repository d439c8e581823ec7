"""`rayflow distill` end to end on the tiny config (local executor): the asked-for student beside
teacher, NOKD and BLKD (no ablation rows), a complete `<output_dir>/student/`, whose exported program,
loaded where rayflow cannot be imported, predicts what rayflow reports; the API reuses every artifact."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from rayflow.pipeline import FM_ROW
from test_predict import assert_matches_program, plain_torch_outputs
from test_your_teacher import run_table

pytestmark = pytest.mark.slow

SETS = ["dre.feature_net.name=teacher", "gan.steps=30", "teacher.train.steps=60", "student.train.steps=60",
        "runtime.executor=local"]
STUDENT = "cGAN-KD: + KD term on soft labels"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    argv = [sys.executable, "-m", "rayflow", "distill", "--config", "tiny", "--set", f"output_dir={out}"]
    p = subprocess.run(argv + [a for s in SETS for a in ("--set", s)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p.stdout


def _table(stdout: str) -> dict[str, float]:
    return run_table(stdout, ("teacher", "NOKD student", "BLKD student", FM_ROW, STUDENT, "fake", "+ ",
                              "perfect generator"))


def test_distill_writes_one_student_beside_nokd_and_blkd(distilled):
    out, stdout = distilled
    rows = _table(stdout)
    assert list(rows) == ["teacher", "NOKD student", "BLKD student", FM_ROW, STUDENT], stdout  # no ablation, no oracle
    assert f"student: {out / 'student'}" in stdout
    student = out / "student"
    assert {p.name for p in student.iterdir()} == {"model.safetensors", "model.json", "model.pt2", "student.json",
                                                   "MODEL_CARD.md"}
    assert [p.name for p in out.iterdir() if p.name.startswith(".student")] == []
    trained = [p.parent.name for p in (out / "artifacts" / "cgankd").glob("*/_COMMITTED")]
    contract = json.loads((student / "student.json").read_text())
    assert trained == [f"cgankd-{contract['source']['key']}"]  # one cGAN-KD student, the one exported
    assert contract["input"] == {"channels": 1, "height": 16, "width": 16, "dtype": "uint8", "layout": "NCHW",
                                 "mode": "L", "preprocessing": contract["input"]["preprocessing"],
                                 "resize": "builtin"}  # digits: the built-in sets' upscale rule
    assert contract["class_names"] == [str(i) for i in range(10)] and contract["task"] == "classification"
    assert contract["settings"]["filter.rho"] == 0.9 and contract["settings"]["chosen by"] == "the config"
    card = (student / "MODEL_CARD.md").read_text()
    assert f"| {STUDENT} **(this student)** | {rows[STUDENT]:.2f} | 1 |" in card
    assert f"| NOKD student | {rows['NOKD student']:.2f} | 1 |" in card
    per_class = [line for line in card.splitlines() if line.startswith("| ") and line.endswith("|")
                 and line.split("|")[1].strip() in contract["class_names"]]
    assert len(per_class) == 10
    assert "CPU latency per image at batch 1:" in card and "at batch 256:" in card and "- parameters: " in card
    assert f"| cgankd(" in card and contract["source"]["key"] in card


def test_the_exported_program_predicts_what_rayflow_reports(distilled, tmp_path):
    from PIL import Image

    import rayflow
    from rayflow.config import load_config
    from rayflow.data import load_splits

    out, stdout = distilled
    student = out / "student"
    test = load_splits(load_config("rayflow/configs/tiny.yaml", SETS).data).test
    # the accuracy rayflow reported is what the student folder's model gives on the test split
    m = rayflow.load_student(student)
    import torch

    with torch.no_grad():
        acc = 100.0 * float((m(torch.from_numpy(test.images)).argmax(1).numpy() == test.labels).mean())
    assert acc == pytest.approx(_table(stdout)[STUDENT], abs=0.006)
    files = []
    for i in range(24):
        f = tmp_path / f"{i:02d}.png"
        Image.fromarray(test.images[i, 0]).save(f)
        files.append(str(f))
    outputs = plain_torch_outputs(student, files)
    df = rayflow.predict(student, files)
    assert_matches_program(df, outputs, [str(i) for i in range(10)])
    csv = tmp_path / "p.csv"
    p = subprocess.run([sys.executable, "-m", "rayflow", "predict", "--model", str(student), *files, "--out", str(csv)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    import pandas as pd

    assert list(pd.read_csv(csv)["predicted"].astype(str)) == list(df["predicted"])


def test_api_distill_reuses_every_artifact(distilled):
    import rayflow

    out, stdout = distilled
    before = (out / "student" / "model.safetensors").read_bytes()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in SETS)}
    r = rayflow.distill("tiny", output_dir=str(out), **overrides)
    assert r.student_dir == str(out / "student") and all(row["reused"] for row in r.rows if "reused" in row)
    assert r.metrics["test_acc"] == pytest.approx(_table(stdout)[STUDENT], abs=0.006)
    assert (out / "student" / "model.safetensors").read_bytes() == before
    assert np.isclose(r.rows[0]["test_acc"], _table(stdout)["teacher"], atol=0.006)


def test_search_exports_the_setting_tune_chose(distilled, monkeypatch):
    """`--search`: the student of the setting the search chose (the search itself stubbed: tests/test_tune.py
    runs real ones), trained beside the cached NOKD and BLKD; tune's own final retrain is skipped."""
    import rayflow

    out, _ = distilled
    calls = []

    def search(cfg, final=True):
        calls.append(final)
        return {"chosen": {"rho": 0.5, "m": 10}}

    monkeypatch.setattr("rayflow.tuning.search.tune", search)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in SETS)}
    r = rayflow.distill("tiny", search=True, output_dir=str(out), **overrides)
    assert calls == [False]
    s = json.loads((out / "student" / "student.json").read_text())["settings"]
    assert (s["filter.rho"], s["synth.m_per_class"]) == (0.5, 10) and s["chosen by"].endswith("rho 0.5, M 10")
    reused = {row["model"]: row["reused"] for row in r.rows}
    assert reused == {"teacher": True, "NOKD student": True, "BLKD student": True,
                      "function matching (FM) student": True, STUDENT: False}

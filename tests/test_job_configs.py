"""Every config a job can name (`jobs/submit.sh run --config NAME`: the packaged ones) plans its whole
stage graph without compute, and the tiny ones run end to end: `tiny` through Ray as a submitted job
(tests/test_jobs.py) and in-process (tests/test_pipeline.py), `regression_tiny` here."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from rayflow.cli import PACKAGED
from rayflow.config import load_config

CONFIGS = sorted(p.stem for p in PACKAGED.glob("*.yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_packaged_config_plans_its_stage_graph(name):
    from rayflow.pipeline import Pipeline

    text = Pipeline(load_config(PACKAGED / f"{name}.yaml")).graph_text()
    nodes = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    for stage in ("teacher", "nokd(seed=0)", "gan", "dre"):
        assert stage in nodes, f"{name}: {stage} missing from\n{text}"
    assert any(n.startswith("cgankd(") for n in nodes) and any(n.startswith("view(") for n in nodes)


def test_tiny_configs_are_the_ones_the_tests_run():
    assert {"tiny", "regression_tiny"} <= set(CONFIGS)


@pytest.mark.slow
def test_regression_tiny_runs_the_whole_pipeline(tmp_path):
    p = subprocess.run([sys.executable, "-m", "rayflow", "run", "--config", "regression_tiny",
                        "--set", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["metric"] == "test_mae_deg"
    rows = {r["model"]: r["test_mae_deg"] for r in res["rows"]}
    assert {"teacher", "NOKD student", "BLKD student", "function matching (FM) student", "perfect generator (oracle)",
            "cGAN-KD: + KD term on soft labels"} <= set(rows), rows
    assert all(math.isfinite(v) for v in rows.values()), rows
    # predicting the mean angle of [0, 90) degrees has an MAE of 22.5: the teacher learned the angle
    assert rows["teacher"] < 0.5 * 22.5, rows
    assert (tmp_path / "report.html").exists() and "headroom" in p.stdout

"""Two embedded runs and a `ray start --head` cluster with a submitted job, on one machine at once.

Before: every training run of the second instance printed a "Found multiple active Ray instances"
traceback, and the head's job submission failed ("No available agent") while an embedded run held
the dashboard agent's default port. The head here has its own temp dir and ports, and the test
stops only the processes it started (never `ray stop`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import head  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def stage_cmd(out: Path, steps: int = 200) -> list[str]:
    return [sys.executable, "-m", "rayflow", "stage", "teacher", "--config", "tiny", "--set", f"output_dir={out}",
            "--set", f"teacher.train.steps={steps}"]


def test_two_embedded_runs_and_a_submitted_job(tmp_path, head):
    address, env = head
    logs = [tmp_path / f"embedded{i}.log" for i in range(2)]
    runs = [subprocess.Popen(stage_cmd(tmp_path / f"embedded{i}"), stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, env=env) for i, log in enumerate(logs)]
    job_out = tmp_path / "job"
    job = subprocess.run([str(ROOT / "jobs" / "submit.sh"), *stage_cmd(job_out)[3:]], capture_output=True,
                         text=True, env={**env, "RAY_ADDRESS": address}, timeout=900, cwd=ROOT)
    codes = [r.wait(timeout=900) for r in runs]
    texts = [log.read_text() for log in logs]
    for code, text in zip(codes, texts):
        assert code == 0, text[-3000:]
    jtext = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in jtext.lower(), jtext[-3000:]
    for text in [*texts, jtext]:
        assert "Traceback" not in text and "multiple active Ray instances" not in text, text[-3000:]
        assert "teacher: " in text  # the stage's result line
    for out in (tmp_path / "embedded0", tmp_path / "embedded1", job_out):
        assert list((out / "artifacts" / "teacher").glob("teacher-*/model.safetensors"))

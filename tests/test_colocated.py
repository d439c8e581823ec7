"""Two embedded runs and a `ray start --head` cluster with a submitted job, on one machine at once.

Before: every training run of the second instance printed a "Found multiple active Ray instances"
traceback, and the head's job submission failed ("No available agent") while an embedded run held
the dashboard agent's default port. The head here has its own temp dir and ports, and the test
stops only the processes it started (never `ray stop`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rayflow.watchdog import _cmdline, processes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AGENT_DEFAULT_PORT = 52365


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def stage_cmd(out: Path, steps: int = 200) -> list[str]:
    return [sys.executable, "-m", "rayflow", "stage", "teacher", "--config", "tiny", "--set", f"output_dir={out}",
            "--set", f"teacher.train.steps={steps}"]


def stop_processes_under(tag: str) -> None:
    """Only the head's processes: those whose command line names its temp dir."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        mine = [p for p in processes() if tag in _cmdline(p)]
        for p in mine:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        time.sleep(2 if mine else 0)


@pytest.fixture
def head():
    """A `ray start --head` cluster: (dashboard address, env for the jobs CLI)."""
    tmp = tempfile.mkdtemp(prefix="rfh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    args = [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={tmp}",
            "--disable-usage-stats"]
    if not port_free(AGENT_DEFAULT_PORT):
        args.append(f"--dashboard-agent-listen-port={free_port()}")  # someone else's Ray holds it
    try:
        p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        yield f"http://127.0.0.1:{dash}", env
    finally:
        stop_processes_under(tmp)


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

"""Every shell command in README.md's fenced bash blocks runs, as written, on the tiny settings — or
says on its own line why it is not run here (`# not run by tests: <reason>`). A README whose
quickstart does not work on a fresh clone fails here first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_your_teacher import FAST, check_student

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKIP = "# not run by tests:"
EXAMPLE = "/tmp/rayflow-example"  # README's example folder: each test run gets its own instead
# the tiny settings: what `distill` / `run` / `tune` get appended (the quickstart's figures are not the point)
TINY = "--executor local " + " ".join(f"--set {s}" for s in FAST)  # tests/test_your_teacher.py's


def commands() -> list[str]:
    """The commands of README's ```bash blocks, continuation lines joined, comments-only lines dropped."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip() and not cmd.strip().startswith("#"):
                out.append(cmd.strip())
    return out


def test_readme_has_a_quickstart_and_every_skip_says_why():
    cmds = commands()
    assert any("rayflow distill" in c for c in cmds) and any("make_example.py" in c for c in cmds)
    for c in cmds:
        if SKIP in c:
            assert len(c.split(SKIP, 1)[1].strip()) > 10, f"a skip marker without a reason: {c}"


def test_readme_commands_run(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    ran = 0
    for cmd in commands():
        if SKIP in cmd:
            continue
        cmd = cmd.replace(EXAMPLE, str(tmp_path / "example")).replace(".venv/bin/", f"{bin_dir}/")
        if re.search(r"rayflow (distill|run|tune)\b", cmd):
            cmd = f"{cmd.split('#', 1)[0].rstrip()} {TINY}"
        elif "make_example.py" in cmd:  # a quicker teacher (conftest's `example` has the same)
            cmd = f"{cmd.split('#', 1)[0].rstrip()} --steps 250"
        p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"README command failed: {cmd}\n{(p.stdout + p.stderr)[-3000:]}"
        ran += 1
        if "rayflow distill" in cmd:
            distilled = p.stdout
    assert ran >= 3
    example = tmp_path / "example"
    assert (example / "predictions.csv").read_text().count("\n") > 10
    # the quickstart's student, distilled with the local executor (tests/test_your_teacher.py: embedded Ray)
    check_student(example / "outputs" / "student", example, distilled, tmp_path, ray=False)

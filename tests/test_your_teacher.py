"""Your teacher in, your student out — the product path end to end, as README's quickstart has it.

`examples/make_example.py` plays the user: a plain-torch script (no rayflow) trains a teacher of its own
(its own nn.Module, RGB 32 px, saved as a state_dict) in a package that lives outside the working
directory and PYTHONPATH, reachable only through the config, beside a folder of mixed-size RGB PNGs with
named classes. `rayflow distill` runs on it with embedded Ray and with the local executor; the student
folder is loaded in a process where rayflow cannot be imported, and gives image by image what
`rayflow predict` (in-process and Ray Data) and `rayflow.predict` report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from test_predict import assert_matches_program, plain_torch_outputs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# a smaller run than the example's own settings: the path is the point here, not the figures (30 GAN and
# 20 ratio-net steps, 100 student steps, 200 pool draws per class; its fakes are near chance, which the
# contract and prediction checks do not depend on)
FAST = ["gan.steps=30", "gan.checkpoint_every=15", "dre.steps=20", "student.train.steps=100", "synth.m_per_class=40",
        "synth.pool_draws=200"]


# the closing table's rows of a distill
ROWS = ("teacher", "NOKD student", "BLKD student", "cGAN-KD: + KD term on soft labels")


def run_table(stdout: str, starts: tuple[str, ...] = ROWS) -> dict[str, float]:
    """model -> test accuracy (%) from the closing table a run prints: its rows whose name starts with one
    of `starts`, in the table's order."""
    return {line[:40].strip(): float(line[40:].split()[-3]) for line in stdout.splitlines() if line.startswith(starts)}


def rayflow_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "rayflow", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def example_sets(out: Path) -> list[str]:
    return [a for s in [f"output_dir={out}", *FAST] for a in ("--set", s)]


def distill(example: Path, out: Path, *extra: str) -> tuple[Path, str]:
    sets = example_sets(out)
    p = rayflow_cli("distill", "--config", str(example / "config.yaml"), *sets, *extra, cwd=out.parent)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "my_teacher" not in sys.modules  # the user's package was never on this process's path
    assert "[teacher] importing my_teacher.net:build" in p.stderr and "[teacher] training" not in p.stderr
    return out / "student", p.stdout


def check_student(student: Path, example: Path, stdout: str, tmp_path: Path, ray: bool) -> None:
    """The student folder against the run's table, and the exported program (loaded where rayflow cannot
    be imported) against `rayflow.predict` and `rayflow predict` (in-process and, with `ray`, Ray Data)."""
    rows = run_table(stdout)
    assert len(rows) == 4 and rows["teacher"] > 60, stdout  # the user's teacher, imported, not trained
    contract = json.loads((student / "student.json").read_text())
    names = sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert contract["class_names"] == names and contract["input"]["channels"] == 3
    files = sorted(str(f) for f in (example / "images").glob("*/00[0-2].png"))  # 30 pictures, every class
    outputs = plain_torch_outputs(student, files)  # rayflow unimportable in that process
    import rayflow

    assert_matches_program(rayflow.predict(student, files), outputs, names)
    for how in ([], ["--ray"]) if ray else ([],):
        csv = tmp_path / f"pred{len(how)}.csv"
        p = rayflow_cli("predict", "--model", str(student), *files, "--out", str(csv), *how, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
        df = pd.read_csv(csv)
        assert_matches_program(df.assign(predicted=df["predicted"].astype(str)), outputs, names)


def test_your_teacher_in_your_student_out_on_embedded_ray(example, example_on_ray, tmp_path):
    """The distill runs in the `example_on_ray` fixture (conftest.py), shared with tests/test_jobs.py. With
    the local executor the same path runs in tests/test_readme.py (README's quickstart as written)."""
    out, stdout = example_on_ray
    check_student(out / "student", example, stdout, tmp_path, ray=True)

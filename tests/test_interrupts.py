"""Kill and interrupt a real `rayflow` process (embedded Ray) in each stage, then re-run it.

What must hold: SIGINT / SIGTERM end with one line and exit 130 / 143; no Ray process of the
driver survives 10 s (SIGKILL included: the watchdog); the re-run resumes from the newest
committed checkpoint (training) or skips the recorded shards (synth); and the final weights and
shards are bit for bit those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayflow.interrupt import MESSAGE
from rayflow.watchdog import _stat, ray_descendants

pytestmark = pytest.mark.slow

SETS = ["teacher.train.steps=300", "student.train.steps=300", "student.model.name=resnet8",
        "runtime.checkpoint_every=100", "gan.steps=240", "gan.checkpoint_every=80", "synth.pool_draws=600"]
POOL = ["pool", "--param", "subsample=false", "--param", "segment=0"]


def command(out: Path, *stage: str) -> list[str]:
    sets = [a for s in [*SETS, f"output_dir={out}"] for a in ("--set", s)]
    return [sys.executable, "-m", "rayflow", "stage", *stage, "--config", "tiny", *sets]


def run(out: Path, *stage: str, timeout: float = 600) -> str:
    p = subprocess.run(command(out, *stage), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    return p.stdout + p.stderr


def wait_for(pred, timeout: float, proc: subprocess.Popen, log: Path):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        assert proc.poll() is None, f"finished before the kill point:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"kill point not reached in {timeout} s:\n{log.read_text()[-3000:]}")


def interrupt(out: Path, stage: list[str], sig: int, ready) -> tuple[str, int, object]:
    """Starts the stage in its own process group, waits for `ready()` (returns what it saw), sends
    `sig`; checks that every Ray process of the driver is gone 10 s later."""
    log = out.parent / f"{out.name}-{sig}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(command(out, *stage), stdout=f, stderr=subprocess.STDOUT, process_group=0)
    try:
        seen = wait_for(ready, 300, proc, log)
        kids = ray_descendants(proc.pid)
        assert kids, "no Ray process found under the driver"
        if sig == signal.SIGINT:  # Ctrl-C in a terminal: the whole foreground process group
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        alive = [p for p, t in kids.items() if (_stat(p) or (0, -1))[1] == t]
        if not alive:
            break
        time.sleep(0.25)
    assert not alive, f"Ray processes of the killed driver still alive after 10 s: {alive}"
    return log.read_text(), code, seen


def latest_step(out: Path):
    """The step of the newest checkpoint in Ray's committed record of a run under `out`, if any."""
    for snap in (out / "ray_storage").glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result")
        except (OSError, json.JSONDecodeError):
            continue
        if latest:
            return int(latest["metrics"]["step"])
    return None


def files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))}


def artifact(out: Path, stage: str) -> Path:
    (d,) = [p for p in (out / "artifacts" / stage).iterdir() if not p.name.startswith(".")]
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every stage under test, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    run(out, *POOL)  # teacher, GAN, pool
    run(out, "nokd", "--param", "seed=0")
    return out


def seeded(tmp_path: Path, reference: Path, *stages: str) -> Path:
    """A fresh output dir holding the reference's committed artifacts of `stages` (the inputs)."""
    out = tmp_path / "run"
    for s in stages:
        shutil.copytree(reference / "artifacts" / s, out / "artifacts" / s)
    return out


@pytest.mark.parametrize("stage,inputs,weights", [
    (["teacher"], (), "*.safetensors"),
    (["nokd", "--param", "seed=0"], ("teacher",), "*.safetensors"),
])
def test_sigkill_in_supervised_training_resumes_bit_exact(tmp_path, reference, stage, inputs, weights):
    out = seeded(tmp_path, reference, *inputs)
    _, code, step = interrupt(out, stage, signal.SIGKILL, lambda: latest_step(out))
    assert code == -signal.SIGKILL and step is not None and step < 300
    log = run(out, *stage)
    assert f"resuming at step {step} " in log
    name = stage[0]
    assert files(artifact(out, name), weights) == files(artifact(reference, name), weights)


def _gan_matches_reference(out: Path, reference: Path) -> None:
    ref = artifact(reference, "gan")
    assert files(artifact(out, "gan"), "*.safetensors") == files(ref, "*.safetensors")
    meta = json.loads((artifact(out, "gan") / "metrics.json").read_text())
    assert meta["selected_step"] == json.loads((ref / "metrics.json").read_text())["selected_step"]


def test_gan_killed_resumes_bit_exact(tmp_path, reference):
    out = seeded(tmp_path, reference, "teacher")
    _, code, step = interrupt(out, ["gan"], signal.SIGKILL, lambda: latest_step(out))
    assert code == -signal.SIGKILL
    assert f"resuming at step {step} " in run(out, "gan")
    _gan_matches_reference(out, reference)


def test_gan_interrupted_twice_resumes_bit_exact(tmp_path, reference):
    """Ctrl-C (SIGINT to the process group), then SIGTERM to the re-run once it has committed a newer
    checkpoint: each ends with one line and its exit code, each re-run resumes from the newest
    checkpoint, and the weights at the end are an uninterrupted run's (one chain: a process start and a
    whole GAN run fewer than a test per signal)."""
    out = seeded(tmp_path, reference, "teacher")
    first = None
    for sig, want in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        text, code, step = interrupt(out, ["gan"], sig, lambda: (s := latest_step(out)) is not None
                                     and (first is None or s > first) and s)
        assert code == want, text[-3000:]
        assert text.rstrip().splitlines()[-1] == MESSAGE and "Traceback" not in text
        if first is not None:
            assert f"resuming at step {first} " in text, text[-3000:]
        first = step
    assert f"resuming at step {first} " in run(out, "gan")
    _gan_matches_reference(out, reference)


def test_synth_killed_after_shards_keeps_them(tmp_path, reference):
    out = seeded(tmp_path, reference, "teacher", "gan")

    def recorded():
        for m in (out / "artifacts" / "pool").glob(".work-*/manifest.json"):
            try:
                shards = json.loads(m.read_text())["shards"]
            except (OSError, json.JSONDecodeError, KeyError):
                continue
            if len(shards) >= 2:  # recorded shards: their files are complete and final
                return m.parent, {Path(r["file"]).name: (m.parent / r["file"]).stat() for r in shards.values()}
        return None

    _, code, (work, before) = interrupt(out, POOL, signal.SIGKILL, recorded)
    assert code == -signal.SIGKILL and before
    run(out, *POOL)
    shards = artifact(out, "pool") / "shards" / "shards"
    after = {p.name: p.stat() for p in shards.glob("*.parquet")}
    for name, st in before.items():  # the recorded shards were not redone
        assert (after[name].st_ino, after[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    ref = artifact(reference, "pool") / "shards"
    assert files(artifact(out, "pool") / "shards", "*.parquet") == files(ref, "*.parquet")

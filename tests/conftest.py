"""Shared fixtures. Ray starts at most once per test session, and only for tests that ask for it."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def hermetic(tmp_path_factory):
    """Everything the suite writes lands under pytest's own temp dir: Ray's temp dir (sessions,
    sockets, `ray_current_cluster`; Ray's socket paths allow ~107 characters, which pytest's base
    temp dir leaves room for, a test's tmp_path not always), rayflow's download cache and scratch
    dirs (TMPDIR), matplotlib's font cache; nothing is read from or written to the user's home (.ci/run runs the
    suite with an empty HOME to prove it; tests/test_hermetic.py checks what is left)."""
    base = tmp_path_factory.getbasetemp()
    ray_tmp = base / "ray"
    if len(str(ray_tmp)) > 40:  # a long --basetemp: a short dir of our own, removed at the end
        ray_tmp = Path(tempfile.mkdtemp(prefix="rft-", dir="/tmp"))
    ray_tmp.mkdir(exist_ok=True)
    scratch = base / "tmp"  # rayflow's scratch dirs, multiprocessing's, torch's: tempfile.gettempdir()
    scratch.mkdir(exist_ok=True)
    env = {"RAY_TMPDIR": str(ray_tmp), "RAYFLOW_CACHE": str(base / "rayflow-cache"),
           "MPLCONFIGDIR": str(base / "matplotlib"), "TMPDIR": str(scratch)}
    saved = {k: os.environ.get(k) for k in env}
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, str(scratch)  # gettempdir() caches its first answer
    os.environ.update(env)
    yield env
    tempfile.tempdir = saved_tempdir
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if not str(ray_tmp).startswith(str(base)):
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(hermetic):
    import ray

    from rayflow.config import RuntimeConfig
    from rayflow.runtime import init_ray

    init_ray(RuntimeConfig(address="local", num_cpus=2, object_store_memory_mb=512))
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = 120
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from rayflow.config import DataConfig
    from rayflow.data import load_splits

    return load_splits(DataConfig(name="digits", image_size=16))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: one torch thread is as fast, and does not suffer from a busy shared machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> Path:
    """examples/make_example.py's output: a user's own teacher package, its weights, an image folder
    and a config naming them (tests/test_your_teacher.py, tests/test_jobs.py)."""
    out = tmp_path_factory.mktemp("user") / "example"
    p = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "examples" / "make_example.py"), str(out), "--steps", "600"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path_factory.getbasetemp())
    assert p.returncode == 0, p.stderr[-3000:]
    sizes = {__import__("PIL.Image").Image.open(f).size for f in (out / "images" / "seven").glob("*.png")}
    assert len(sizes) > 3  # mixed sizes, as a user's folder has them
    return out

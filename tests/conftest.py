"""Shared fixtures. Ray starts at most once per test session, and only for tests that ask for it."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rayflow.ray_env import one_machine_train_env

# the embedded instance's Train settings also for the drivers the tests connect to their own clusters
# (jobs, 3-node): every cluster here is this one machine
os.environ.update(one_machine_train_env(os.environ))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has made its factory
def pytest_configure(config):
    """Everything the suite writes lands under pytest's own temp dir: Ray's temp dir (sessions,
    sockets, `ray_current_cluster`; Ray's socket paths allow ~107 characters, which pytest's base
    temp dir leaves room for, a test's tmp_path not always), rayflow's download cache and scratch
    dirs (TMPDIR), matplotlib's config and font cache; nothing is read from or written to the user's
    home (.ci/run runs the suite with an empty HOME and checks it is still empty afterwards). Set
    here, before collection: a test module that imports matplotlib would otherwise write its font
    cache to ~/.cache before any fixture runs."""
    base = config._tmp_path_factory.getbasetemp()
    _compile_rayflow()
    ray_tmp = base / "ray"
    if len(str(ray_tmp)) > 40:  # a long --basetemp: a short dir of our own, removed at the end
        ray_tmp = Path(tempfile.mkdtemp(prefix="rft-", dir="/tmp"))
        config.add_cleanup(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    scratch = base / "tmp"  # rayflow's scratch dirs, multiprocessing's, torch's: tempfile.gettempdir()
    for d in (ray_tmp, scratch):
        d.mkdir(exist_ok=True)
    os.environ.update(RAY_TMPDIR=str(ray_tmp), RAYFLOW_CACHE=str(base / "rayflow-cache"),
                      MPLCONFIGDIR=str(base / "matplotlib"), TMPDIR=str(scratch))
    tempfile.tempdir = str(scratch)  # gettempdir() caches its first answer


def _compile_rayflow() -> None:
    """rayflow's bytecode, written once into the checkout's (git-ignored) __pycache__ dirs. Why: with
    PYTHONDONTWRITEBYTECODE set (as on this project's machines) nothing caches it, and every process that
    imports rayflow (each CLI run, Train worker, Ray Data actor: hundreds per session) compiled ~100
    modules again, 0.6 s of CPU each. Python still checks each file's mtime, so an edit is never
    shadowed by a stale .pyc."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "rayflow"), quiet=1)


def pytest_collection_modifyitems(config, items):
    """Under xdist (`make test TEST_WORKERS=N`) modules with slow (Ray end-to-end) tests first, in file
    order, then the rest: each worker starts on a long module and the many short ones fill the end,
    instead of one worker finishing alone on the last long module. A serial run keeps file order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable


def shared_dir(tmp_path_factory) -> Path:
    """A dir every xdist worker of this session sees (the workers' base temp dirs are siblings)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def ray_session():
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


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """The local executor sets this process's torch threads for its work (a user's process runs one
    pipeline); a test must not hand its thread count to the next (float sums, so results, differ)."""
    prev = torch.get_num_threads()
    yield
    if torch.get_num_threads() != prev:
        torch.set_num_threads(prev)


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
    and a config naming them (tests/test_your_teacher.py, tests/test_jobs.py). Built once per session,
    also when xdist workers share it (a lock; `.built` written last)."""
    from filelock import FileLock
    from PIL import Image

    root = shared_dir(tmp_path_factory)
    out = root / "user" / "example"
    with FileLock(str(root / "user.lock")):
        if not (out / ".built").is_file():
            shutil.rmtree(out, ignore_errors=True)
            p = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "examples" / "make_example.py"),
                                str(out), "--steps", "250"], capture_output=True, text=True, timeout=300, cwd=root)
            assert p.returncode == 0, p.stderr[-3000:]
            (out / ".built").touch()

    sizes = {Image.open(f).size for f in (out / "images" / "seven").glob("*.png")}
    assert len(sizes) > 3  # mixed sizes, as a user's folder has them
    return out


@pytest.fixture(scope="session")
def example_on_ray(example, tmp_path_factory) -> tuple[Path, str]:
    """`rayflow distill` of the example on embedded Ray, once per session (xdist workers share it: a lock,
    `stdout.txt` written last): its output dir and what it printed. tests/test_your_teacher.py checks its
    student; tests/test_jobs.py submits the same config as a job over a copy of its GAN, ratio net
    and fake pool (the job then trains the students, whose Train workers need the user's package)."""
    from filelock import FileLock
    from test_your_teacher import distill

    root = shared_dir(tmp_path_factory) / "user"
    out = root / "on_ray"
    with FileLock(str(root / "on_ray.lock")):
        if not (out / "stdout.txt").is_file():
            shutil.rmtree(out, ignore_errors=True)
            _, stdout = distill(example, out, "--executor", "ray")
            (out / "stdout.txt").write_text(stdout)
    return out, (out / "stdout.txt").read_text()

"""A `ray start --head` cluster for tests that submit Ray jobs, next to whatever other Ray runs here.

The head has its own temp dir and ports, and is stopped by ending only the processes whose command line
names its temp dir (never `ray stop`, which would end every Ray on the machine). Import a fixture into a
test module: `from ray_head import head  # noqa: F401` (one head per test) or `module_head` (one per module).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import free_port

from rayflow.watchdog import _cmdline, descendants, processes

__all__ = ["free_port", "head", "module_head", "port_free", "processes_of", "ray_head", "stop_processes_under"]

BIN = Path(sys.executable).parent
AGENT_DEFAULT_PORT = 52365


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _holds_file_under(pid: int, tag: str) -> bool:
    try:
        fds = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or not ours to look at
        return False
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            if tag in os.readlink(fd.path):
                return True
    return False


def processes_of(tag: str) -> dict[int, int]:
    """pid -> start time of a head's processes: those whose command line names its temp dir `tag`, those
    that hold a file in it (its logs), and their descendants. Not every one names it: the dashboard and
    runtime-env agents (`ray::DashboardAgent`), the Ray client server, workers and a job's driver."""
    procs = processes()
    tagged = {p for p in procs if p != os.getpid() and (tag in _cmdline(p) or _holds_file_under(p, tag))}
    return {p: procs[p][1] for p in (tagged | descendants(tagged, procs)) - {os.getpid()}}


def stop_processes_under(tag: str) -> None:
    """SIGTERM, then SIGKILL, to the head's processes only (those seen in any round, if still the same
    process: a pid reused meanwhile is left alone). Never `ray stop`."""
    seen: dict[int, int] = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        seen.update(processes_of(tag))
        live = processes()
        hit = [p for p, start in seen.items() if p in live and live[p][1] == start]
        for p in hit:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        time.sleep(2 if hit else 0)


@contextlib.contextmanager
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A `ray start --head` cluster as a new user starts one: (dashboard address, env for the jobs CLI).

    Its processes and the jobs CLI get an empty HOME and no RAY_AUTH_* variables (no token anywhere:
    Ray starts the head without auth), so a test cannot pass only because some earlier run left a
    ~/.ray/auth_token behind. Its temp dir is removed with it."""
    tmp = tempfile.mkdtemp(prefix="rfh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    home = Path(tmp) / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_") and k != "RAY_ADDRESS"}
    env.update(PATH=f"{BIN}:{os.environ['PATH']}", HOME=str(home))
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
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def head():
    with ray_head() as h:
        yield h


@pytest.fixture(scope="module")
def module_head():
    """One head for all tests of a module (jobs that share a cluster)."""
    with ray_head() as h:
        yield h

"""A tiny supervisor that outlives a SIGKILLed driver and kills the Ray processes it started.

Why: Ray's own reaper kills only the driver's process group, and after `kill -9` of an embedded
run the dashboard and runtime-env agents (and sometimes a worker) ran on for minutes, ignoring
SIGTERM. The watchdog runs in its own session, records the driver's Ray descendants every
`POLL_S` while the driver lives, and SIGKILLs those still alive (and their children) once it
is gone. Linux only (/proc); elsewhere `start` does nothing.

    python -m rayflow.watchdog DRIVER_PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
_RAY_MARKERS = ("ray", "gcs_server", "raylet", "default_worker", "dashboard", "log_monitor")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, start time) of every live process."""
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            st = _stat(int(p.name))
            if st is not None:
                out[int(p.name)] = st
    return out


def descendants(roots: set[int], procs: dict[int, tuple[int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def ray_descendants(pid: int, exclude: int | None = None) -> dict[int, int]:
    """The Ray processes below `pid` now: pid -> start time (tests use it too)."""
    procs = processes()
    return {p: procs[p][1] for p in descendants({pid}, procs)
            if p != exclude and any(m in _cmdline(p) for m in _RAY_MARKERS)}


def _alive(pid: int) -> bool:
    return _stat(pid) is not None


def watch(driver: int) -> None:
    seen: dict[int, int] = {}
    while _alive(driver) and os.getppid() == driver:
        seen.update(ray_descendants(driver, exclude=os.getpid()))
        time.sleep(POLL_S)
    procs = processes()
    # the recorded ones, and whatever they started since the last look (workers of a raylet)
    live = {p for p, t in seen.items() if p in procs and procs[p][1] == t}
    for p in live | descendants(live, procs):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def start() -> subprocess.Popen | None:
    """Starts the watchdog for this process (no-op without /proc)."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "rayflow.watchdog", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))

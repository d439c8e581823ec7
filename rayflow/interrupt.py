"""Ctrl-C and SIGTERM end a command with one line and the conventional exit code (130 / 143),
after shutting down the embedded Ray, so the next run of the same command resumes cleanly."""

from __future__ import annotations

import os
import signal
import sys
import threading

MESSAGE = "rayflow: interrupted; re-run the same command to resume"
_received: list[int] = []


def _on_signal(signum, frame):
    """Both signals raise KeyboardInterrupt in the main thread: Ray's blocking calls (Cython) pass
    that one through cleanly (any other exception from a handler surfaced as a SystemError, and
    Ray re-raises a fresh KeyboardInterrupt, so the signal itself is remembered here)."""
    _received.append(signum)
    raise KeyboardInterrupt()


def install_handlers() -> None:
    """(Re)installs the handlers: `ray.init` replaces SIGTERM's with its own `sys.exit(15)`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def run_guarded(fn, *args) -> int:
    """`fn(*args)`'s exit code, or 128 + the signal's number after one line if interrupted."""
    install_handlers()
    try:
        return fn(*args)
    except KeyboardInterrupt:
        code = 128 + (_received[0] if _received else signal.SIGINT)
        for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the shutdown short
            signal.signal(s, signal.SIG_IGN)
        try:  # first: until Ray is down its log thread still forwards the workers' last lines
            _shutdown_ray()
        except Exception:  # noqa: BLE001 - the run is over either way; the message is what matters
            pass
        # the workers' last lines sit in stdout's buffer (a file or pipe is block-buffered; Ray's
        # shutdown prints its deduplicated leftovers there): out first, or they land after the message
        sys.stdout.flush()
        print(MESSAGE, file=sys.stderr, flush=True)  # the command's last line
        # the interpreter then joins non-daemon threads; one left by an interrupted Ray Data read kept a
        # SIGTERM'd `rayflow tune` alive (signals ignored by then) until SIGKILL: exit anyway, after 10 s
        _exit_soon(code, 10.0)
        return code


def _exit_soon(code: int, after_s: float) -> None:
    sys.stdout.flush()
    timer = threading.Timer(after_s, os._exit, (code,))
    timer.daemon = True
    timer.start()

"""Ctrl-C and SIGTERM end a command with one line and the conventional exit code (130 / 143),
after shutting down the embedded Ray, so the next run of the same command resumes cleanly."""

from __future__ import annotations

import signal
import sys
import threading

MESSAGE = "rayflow: interrupted; re-run the same command to resume"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


def _on_sigterm(signum, frame):
    raise Terminated()


def install_handlers() -> None:
    """(Re)installs the SIGTERM handler: `ray.init` replaces it with its own `sys.exit(15)`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def run_guarded(fn, *args) -> int:
    """`fn(*args)`'s exit code, or 130 / 143 after one line if interrupted."""
    install_handlers()
    try:
        return fn(*args)
    except (KeyboardInterrupt, Terminated) as e:
        code = 143 if isinstance(e, Terminated) else 130
        for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the shutdown short
            signal.signal(s, signal.SIG_IGN)
        print(MESSAGE, file=sys.stderr, flush=True)
        try:
            _shutdown_ray()
        except Exception:  # noqa: BLE001 - the run is over either way; the message is what matters
            pass
        return code

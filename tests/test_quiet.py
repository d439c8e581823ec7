"""Quiet by default: rayflow's own progress and the warnings that matter; Ray's chatter and Ray
Data's progress bars only with `rayflow -v`; `rayflow --help` starts without torch or Ray."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

HELP_IMPORTS = """
import sys
from rayflow.cli import main
for argv in (["--help"], ["run", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print("HEAVY", sorted(m for m in ("torch", "ray") if m in sys.modules))
"""


def test_help_imports_neither_torch_nor_ray():
    p = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "HEAVY []" in p.stdout, p.stdout


def test_verbose_turns_ray_output_on():
    from rayflow.cli import _cfg, build_parser

    quiet = _cfg(build_parser().parse_args(["run", "--config", "tiny"]))
    loud = _cfg(build_parser().parse_args(["-v", "run", "--config", "tiny"]))
    assert quiet.runtime.quiet and not loud.runtime.quiet


def test_user_errors_without_importing_their_modules():
    from rayflow.cli import USER_ERRORS, _user_errors
    from rayflow.config import ConfigError

    assert ConfigError in _user_errors()  # cli imports rayflow.config itself
    assert all(e.__name__ in USER_ERRORS.values() for e in _user_errors())


@contextmanager
def rayflow_records():
    """Records of the `rayflow` logger (which `rayflow.cli.main` detaches from the root's handlers)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    log = logging.getLogger("rayflow")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def test_per_class_selection_warns_once_for_every_short_class():
    from rayflow.gan.selection import select_per_class

    cands = [({"step": s, "label_consistency": 10.0, "label_consistency_per_class": per,
               "fid_teacher_features": fid}, s) for s, per, fid in
             [(30, [0.0, 2.0, 90.0, 40.0], 16.0), (60, [5.0, 1.0, 95.0, 20.0], 12.0)]]
    with rayflow_records() as records:
        picks = select_per_class(cands, 85.0, 4)
    assert [d for _, d in picks] == [60, 30, 60, 30]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "3 of 4 classes" in warnings[0] and "step 60 for classes 0, 2" in warnings[0]
    with rayflow_records() as records:
        select_per_class(cands, 0.0, 4)
    assert [r.levelno for r in records] == [logging.INFO]


def test_batch_summary_names_every_stage_once():
    from rayflow.stages.runner import _batch_summary

    assert _batch_summary([("cgankd", "mlp", 150)] * 5) == "cgankd ×5: mlp, 150 steps"
    assert _batch_summary([("nokd", "mlp", 150), ("blkd", "mlp", 150), ("teacher", "resnet8", 300)]) == \
        "nokd, blkd: mlp, 150 steps; teacher: resnet8, 300 steps"


def test_synth_round_line_says_what_it_kept():
    from rayflow.synth.driver import _kept_text

    assert _kept_text(np.array([50] * 10), 30) == "kept 500 samples (50 per class; target 30)"
    assert _kept_text(np.array([20, 40, 30]), 30) == "kept 90 samples (20-40 per class; 1 of 3 classes short of 30)"


@pytest.mark.slow
def test_tiny_run_output_is_short(tmp_path):
    """The whole tiny pipeline on its own embedded Ray: at most 60 lines, no Ray noise. Progress updates
    of a stage still running (`... ETA 3s`) come every few seconds, so a loaded machine prints more of
    them: they are not counted, but each stage gets only a few."""
    p = subprocess.run([sys.executable, "-m", "rayflow", "run", "--config", "tiny", "--set",
                        f"output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    lines = out.splitlines()
    for noise in ("Traceback", "Progress bars disabled", "core_worker", "execution finished", "DeprecationWarning",
                  "will hang"):
        assert noise not in out, out
    assert "cGAN-KD: + KD term on soft labels" in p.stdout and "total wall time" in p.stdout, out
    updates = [line for line in lines if re.search(r"steps/s  ETA \d+s$", line)]
    assert len(lines) - len(updates) <= 60, f"{len(lines) - len(updates)} lines:\n{out}"
    assert len(updates) <= 2 * len([line for line in lines if re.search(r"steps/s  in \d+s$", line)]), out


def test_worker_hook_drops_only_the_known_ray_messages():
    """The setup hook of a quiet run's Ray workers drops Ray Train's "safe to ignore" resource-request
    traceback and Ray Data's no-CPU guess, and nothing else those loggers say."""
    from rayflow.runtime import _NO_CPU_WARNING, _TRAIN_REQUEST_WARNING, quiet_ray_process

    quiet_ray_process()
    quiet_ray_process()  # idempotent: one filter per message
    for name, prefix in (_TRAIN_REQUEST_WARNING, _NO_CPU_WARNING):
        lg = logging.getLogger(name)
        assert sum(getattr(f, "prefix", None) == prefix for f in lg.filters) == 1
        known = logging.LogRecord(name, logging.WARNING, __file__, 1, prefix + " x. it's safe to ignore", None, None)
        other = logging.LogRecord(name, logging.WARNING, __file__, 1, "something else went wrong", None, None)
        assert not lg.filter(known) and lg.filter(other)


def test_a_crash_of_rays_watcher_thread_is_one_line(capfd):
    """Train's placement-group cleaner thread dies with a traceback when a state-API poll times out on a
    busy machine (the run goes on); a quiet run's workers report it in one line. Its normal end (SystemExit)
    and every other thread go to the previous hook (Python's own is silent on SystemExit)."""
    import threading

    from rayflow.runtime import _one_line_for_ray_monitors

    seen = []
    hook = _one_line_for_ray_monitors(seen.append)

    def crash(exc):
        raise exc

    prev = threading.excepthook
    threading.excepthook = hook
    try:
        for name, exc in (("PlacementGroupCleanerMonitor", TimeoutError("state API timed out\nmore words")),
                          ("PlacementGroupCleanerMonitor", SystemExit(0)), ("mine", TimeoutError("x"))):
            t = threading.Thread(target=crash, args=(exc,), name=name)
            t.start()
            t.join()
    finally:
        threading.excepthook = prev
    err = capfd.readouterr().err
    assert err.strip() == "(ray) PlacementGroupCleanerMonitor stopped: TimeoutError: state API timed out"
    assert [(a.thread.name, a.exc_type) for a in seen] == [("PlacementGroupCleanerMonitor", SystemExit),
                                                           ("mine", TimeoutError)]

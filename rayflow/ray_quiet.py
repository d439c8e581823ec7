"""What quiets Ray in a quiet run's processes, without importing Ray: the worker setup hook
(`quiet_ray_process`, named in the job's runtime_env, so every worker process imports this small module
and nothing heavier) and the known messages it drops; rayflow.runtime applies them to the driver."""

from __future__ import annotations

import logging
import sys
import threading
import warnings

_PROGRESS_LOGGER = "ray.data._internal.progress"  # its one line: "Progress bars disabled. To enable..."
# Ray Data's "will hang" guess reads `ray.available_resources()`, which lags the cluster: it fired
# right after ray.init on an idle 2-CPU cluster, and between back-to-back reads (the fake sets of a
# batched run). A pipeline that really cannot get CPUs fails on execution_no_progress_timeout_s,
# and an actor-pool layout that cannot fit is refused up front (executors/ray_data.min_actors).
_NO_CPU_WARNING = ("ray.data.dataset", "Warning: The Ray cluster currently does not have any available CPUs")
# Ray Train's controller gives its autoscaling request a hard 5 s; on a busy 2-core box it times out and
# logs a traceback that Ray itself calls "safe to ignore" (the request is resent every few seconds)
_TRAIN_REQUEST_WARNING = ("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",
                          "Failed to send resource request for")


def quiet_ray_process() -> None:
    """Setup hook of every Ray worker process of a quiet run: Ray Data's "progress bars disabled"
    notice (once per process that executes a dataset: Train's split coordinators do), its stale "will
    hang" guess, and Ray's deprecation warnings (Train's own DataConfig calls the deprecated
    `ExecutionOptions.exclude_resources`) off. Cheap: imports nothing, runs before any task."""
    try:
        logging.getLogger(_PROGRESS_LOGGER).setLevel(logging.ERROR)
        _drop_message(*_NO_CPU_WARNING)
        _drop_message(*_TRAIN_REQUEST_WARNING)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\..*")
        if not getattr(threading.excepthook, "rayflow", False):
            threading.excepthook = _one_line_for_ray_monitors(threading.excepthook)
    except Exception:  # noqa: BLE001 - a failing setup hook would fail every worker start
        pass


# Ray's own watcher threads whose crash ends only the watching (the run goes on): Train's placement-group
# cleaner polls the state API and dies with a traceback on any error but the one it expects (seen: a poll
# timing out on a busy machine; an AuthenticationError from an embedded Ray's token-mode dashboard); an
# embedded Ray ends with its driver, placement groups included
_RAY_MONITOR_THREADS = ("PlacementGroupCleanerMonitor",)


def _one_line_for_ray_monitors(hook):
    """`threading.excepthook` that reports a crash of one of Ray's watcher threads in one line (a
    traceback of Ray's in a run's output reads as the run failing), every other thread as before."""
    def excepthook(args):
        name = getattr(args.thread, "name", "")
        if name in _RAY_MONITOR_THREADS and not issubclass(args.exc_type, SystemExit):  # its normal end
            first = str(args.exc_value).strip().split("\n", 1)[0][:160]
            print(f"(ray) {name} stopped: {args.exc_type.__name__}: {first}", file=sys.stderr, flush=True)
            return
        hook(args)

    excepthook.rayflow = True
    return excepthook


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _drop_message(logger: str, prefix: str) -> None:
    """Drops one known message of `logger` (once per process, however often called)."""
    lg = logging.getLogger(logger)
    if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in lg.filters):
        lg.addFilter(_DropMessage(prefix))

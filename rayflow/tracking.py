"""Metrics of every stage and trial to TensorBoard event files and, when `mlflow` is installed and
`runtime.mlflow` is on, to an MLflow run (local file store `<output_dir>/mlruns` by default).

Why a spec object: training functions run in Ray Train workers, Ray tasks and the driver alike. The
stage hands them a picklable `TrackingSpec`; the process that has the metrics (rank 0, the task, the
driver) calls `spec.open(name)` and writes itself, so numeric code never imports this module. On an
object-store output the event files are written to a local temp directory and uploaded to
`<output>/tensorboard/<name>/` when the tracker closes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("rayflow")

TB_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
_SKIP = {"step", "item", "resumed"}  # bookkeeping, not curves
_warned: set[str] = set()


class Tracker(Protocol):
    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def close(self) -> None: ...


def log_scalars(tracker: Tracker, metrics: dict, step: int, prefix: str = "") -> None:
    """Every finite number of `metrics` (lists, strings and bookkeeping keys are left out)."""
    for k, v in metrics.items():
        if k in _SKIP or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            tracker.scalar(f"{prefix}{k}", float(v), int(step))


class NullTracker:
    def scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def _once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.info(msg)


def summary_writer_class() -> Any:
    """torch's SummaryWriter (needs the `tensorboard` package), else tensorboardX's (a Ray Tune
    dependency), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        return None


class TensorBoardTracker:
    """Event files in `logdir`; with `upload=(fs, remote_dir)` copied there on close."""

    def __init__(self, logdir: str, upload: tuple[Any, str] | None = None):
        self.logdir, self.upload = logdir, upload
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.writer = summary_writer_class()(logdir)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
        if self.upload is not None:
            fs, remote = self.upload
            try:  # a file system with directories needs it; an object store has none
                fs.create_dir(remote, recursive=True)
            except OSError:
                pass
            for f in sorted(Path(self.logdir).iterdir()):
                if f.is_file():
                    with fs.open_output_stream(f"{remote}/{f.name}") as out:
                        out.write(f.read_bytes())


class MLflowTracker:
    """One MLflow run per stage (named after it) in the experiment `experiment`."""

    def __init__(self, uri: str, experiment: str, name: str):
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store ("maintenance mode") unless opted in; a store of plain
            # files under the output dir is what runtime.mlflow promises without a server or database
            # (runtime.mlflow_uri=sqlite:///... or http://... picks another backend)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, tag, value, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _Both:
    def __init__(self, trackers: list):
        self.trackers = trackers

    def scalar(self, tag: str, value: float, step: int) -> None:
        for t in self.trackers:
            t.scalar(tag, value, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


@dataclass(frozen=True)
class TrackingSpec:
    """Where trackers write (picklable: it travels to Ray workers and tasks)."""

    tensorboard: str | None = None  # local root of the event directories
    upload: tuple[Any, str] | None = None  # (pyarrow fs, remote root) on an object-store output
    mlflow_uri: str | None = None
    experiment: str = "rayflow"

    def open(self, name: str) -> Tracker:
        """A tracker for stage/run `name`; a no-op where nothing can be written."""
        out: list = []
        if self.tensorboard:
            if summary_writer_class() is None:
                _once("tb", "TensorBoard metrics off: neither `tensorboard` nor `tensorboardX` is installed")
            else:
                up = (self.upload[0], f"{self.upload[1]}/{name}") if self.upload else None
                out.append(TensorBoardTracker(os.path.join(self.tensorboard, name), up))
        if self.mlflow_uri:
            try:
                out.append(MLflowTracker(self.mlflow_uri, self.experiment, name))
            except ImportError:
                _once("mlflow", "MLflow metrics off: `mlflow` is not installed")
            except Exception as e:  # noqa: BLE001 - an unreachable tracking server must not fail training
                _once("mlflow-error", f"MLflow metrics off: {type(e).__name__}: {e}")
        return out[0] if len(out) == 1 else _Both(out) if out else NullTracker()


def spec_for(runtime: Any, store: Any, experiment: str = "rayflow") -> TrackingSpec | None:
    """The run's spec from `runtime.tensorboard/mlflow/mlflow_uri` and the artifact store; None when
    both are off."""
    tb = upload = None
    if runtime.tensorboard:
        if store.is_local:
            tb = str(Path(store.root) / TB_DIR)
        else:  # written here, uploaded into the store when each tracker closes
            tag = hashlib.sha256(store.location.encode()).hexdigest()[:12]
            tb = str(Path(tempfile.gettempdir()) / "rayflow-tensorboard" / tag)
            upload = (store.fs, f"{store.root.rstrip('/')}/{TB_DIR}")
    uri = None
    if runtime.mlflow:
        uri = runtime.mlflow_uri or (Path(store.root, MLFLOW_DIR).resolve().as_uri() if store.is_local else None)
        if uri is None:
            _once("mlflow-uri", "MLflow metrics off: an object-store output needs runtime.mlflow_uri")
    if tb is None and uri is None:
        return None
    return TrackingSpec(tb, upload, uri, experiment)


def open_tracker(spec: Any, name: str) -> Tracker:
    """`spec.open(name)`, or a no-op for no spec."""
    return spec.open(name) if spec is not None else NullTracker()

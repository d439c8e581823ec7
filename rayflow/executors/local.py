"""The in-process executor: the same training functions and batch steps as on Ray, in this process.

Used for `runtime.executor: local` (no Ray installed or wanted: debugging, GPU boxes, the
benchmarks' plain-torch baseline) and for work too small to be worth a Ray pipeline (synth top-ups).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayflow.atomic import atomic_file, atomic_write_text
from rayflow.executors.base import (
    Checkpoint,
    FakeSpec,
    FitResult,
    PoolSpec,
    StepSpec,
    rows,
    worker_threads,
)

RECORD = "checkpoints.json"


def local_run_dir(storage: tuple[str, Any], name: str) -> Path:
    """A local directory for run `name`: inside the storage path when it is local, else under the
    temp dir (a local run with an object-store output keeps its resume state on this machine)."""
    path, fs = storage
    if fs is None:
        return Path(path) / name
    tag = hashlib.sha256(path.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "rayflow-local-runs" / tag / name


class LocalTrainContext:
    """A one-worker TrainContext whose checkpoints are directories listed in a record file.

    The record (written atomically after the checkpoint's files) is the run's committed history:
    resume and selection read only what it lists, so a directory a killed run left half-written,
    or wrote after its last record update, is never used (it is swept on the next start)."""

    def __init__(self, run_dir: Path, keep: int | None, device: torch.device, datasets: dict[str, FakeSpec]):
        self.rank, self.world, self.device = 0, 1, device
        self.run_dir, self.keep, self.datasets = run_dir, keep, datasets
        run_dir.mkdir(parents=True, exist_ok=True)
        self.record: list[dict] = self._read_record()
        listed = {r["dir"] for r in self.record}
        for d in run_dir.glob("checkpoint_*"):
            if d.name not in listed:
                shutil.rmtree(d, ignore_errors=True)

    def _read_record(self) -> list[dict]:
        p = self.run_dir / RECORD
        return json.loads(p.read_text()) if p.is_file() else []

    def _write_record(self) -> None:
        atomic_write_text(self.run_dir / RECORD, json.dumps(self.record))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def load_checkpoint(self, read: Callable[[Path], Any]) -> Any:
        return read(self.run_dir / self.record[-1]["dir"]) if self.record else None

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is None:
            return
        index = int(self.record[-1]["dir"].rsplit("_", 1)[1]) + 1 if self.record else 0
        dest = self.run_dir / f"checkpoint_{index:06d}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(checkpoint_dir, dest)
        self.record.append({"dir": dest.name, "metrics": metrics})
        dropped = self.record[:-self.keep] if self.keep else []
        self.record = self.record[len(dropped):]
        self._write_record()
        for r in dropped:
            shutil.rmtree(self.run_dir / r["dir"], ignore_errors=True)

    def dataset_shard(self, name: str) -> Any:
        return None

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(r["metrics"], lambda d=self.run_dir / r["dir"]: contextlib.nullcontext(d))
                for r in self.record]


class LocalExecutor:
    name = "local"

    def fit(self, fn: Callable, config: dict, *, name: str, scaling: Any, storage: tuple[str, Any],
            datasets: dict[str, FakeSpec] | None = None, keep: int | None = None,
            max_failures: int = 1) -> FitResult:
        device = torch.device("cuda" if scaling.use_gpu and torch.cuda.is_available() else "cpu")
        torch.set_num_threads(worker_threads(scaling, in_process=True))
        ctx = LocalTrainContext(local_run_dir(storage, name), keep, device, datasets or {})
        out = fn(ctx, config)
        return FitResult(out, ctx.checkpoints(), str(ctx.run_dir))

    def map_batches(self, items: list[dict], steps: Callable[[str, int | None], list[StepSpec]],
                    pool: PoolSpec) -> Iterator[dict]:
        device = "cuda" if pool.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
        chain = [s.cls(**s.kwargs) for s in steps(device, None)]
        for item in items:
            batch = {k: np.array([v], np.int64) for k, v in item.items()}
            for step in chain:
                batch = step(batch)
            yield from rows(batch)

    def tune(self, trial: Callable, *, searcher: Any, trials: int, metric: str, mode: str, to_error: Callable,
             storage: tuple[str, Any], name: str, **_: Any) -> list[dict]:
        """Trials one after another (no early stopping); the searcher's state and the results so far
        are saved after every trial, so a killed search resumes where it stopped."""
        import pickle

        run = local_run_dir(storage, name)
        run.mkdir(parents=True, exist_ok=True)
        state = run / "search.pkl"
        done: list[dict] = []
        if state.is_file():
            saved = pickle.loads(state.read_bytes())
            searcher.load(saved["state"])
            done = saved["results"]
        while len(done) < trials:
            cfg = searcher.ask()
            if cfg is None:
                break
            result = trial(dict(cfg))
            searcher.tell(cfg, to_error(result[metric]) if metric in result else None)
            done.append({**cfg, **result})
            with atomic_file(state) as tmp:
                tmp.write_bytes(pickle.dumps({"state": searcher.state(), "results": done}))
        return done

    def remote(self, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

"""Content-addressed stage directories: same config + same inputs -> same directory -> reuse.

A stage writes into a private temp dir next to its final place and renames it when done, so a
killed run leaves at worst a `.tmp-*` dir, which is never mistaken for a result (and is swept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

log = logging.getLogger("rayflow")

DONE = "metrics.json"


@dataclass
class Artifact:
    """A finished stage: where its files are, its key, and the metrics it reported."""

    stage: str
    key: str
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def file(self, name: str) -> Path:
        return self.path / name


def _canonical(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def stage_key(stage: str, config: Any, inputs: list[Artifact] | tuple = ()) -> str:
    blob = json.dumps({"stage": stage, "config": _canonical(config), "inputs": [a.key for a in inputs]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _sweep_stale_tmp(parent: Path, older_than_s: float = 0.0) -> None:
    now = time.time()
    for d in parent.glob(".tmp-*"):
        try:
            if now - d.stat().st_mtime >= older_than_s and not _owner_alive(d):
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass


def _owner_alive(tmp: Path) -> bool:
    try:
        pid = int(tmp.name.split("-")[2])
        os.kill(pid, 0)
        return pid != os.getpid()
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def load_artifact(stage: str, key: str, path: Path) -> Artifact:
    return Artifact(stage, key, path, json.loads((path / DONE).read_text()), reused=True)


def cached_artifact(root: str | Path, stage: str, config: Any, inputs: list[Artifact] | tuple) -> Artifact | None:
    """The finished artifact for (stage, config, inputs), or None."""
    key = stage_key(stage, config, inputs)
    final = Path(root).absolute() / stage / f"{stage}-{key}"
    if not (final / DONE).is_file():
        return None
    log.info("[%s] reusing cached artifact %s", stage, final)
    return load_artifact(stage, key, final)


def run_stage(root: str | Path, stage: str, config: Any, inputs: list[Artifact] | tuple,
              build: Callable[[Path], dict[str, Any]], force: bool = False) -> Artifact:
    """Returns the cached artifact for (stage, config, inputs), or builds it atomically.

    `build(tmp_dir)` writes its files into tmp_dir and returns the metrics dict.
    """
    key = stage_key(stage, config, inputs)
    parent = Path(root).absolute() / stage  # absolute: Ray workers run in another directory
    final = parent / f"{stage}-{key}"
    if not force:
        art = cached_artifact(root, stage, config, inputs)
        if art is not None:
            return art
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(parent)
    tmp = parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        (tmp / "config.yaml").write_text(yaml.safe_dump(
            {"stage": stage, "key": key, "inputs": {a.stage: str(a.path) for a in inputs},
             "config": _canonical(config)}, sort_keys=False))
        metrics = build(tmp) or {}
        (tmp / DONE).write_text(json.dumps(metrics, indent=2, default=float))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("[%s] wrote %s", stage, final)
    return Artifact(stage, key, final, metrics)

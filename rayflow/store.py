"""Artifact store on pyarrow.fs: a pipeline's outputs on a local path or any URI (s3://bucket/prefix, ...).

Commit protocol: everything is uploaded first, and a `_COMMITTED` marker is written LAST; readers ignore
whatever has no marker, so a killed or failed builder never leaves a half artifact that looks finished.
- Local store: a per-key flock serialises builders (a second one waits and reuses); files are built in a
  `.tmp-*` sibling and renamed into <root>/artifacts/<stage>/<stage>-<key>/ together with the marker.
- Object store (no locks, no atomic rename): every builder uploads its own attempt
  <root>/artifacts/<stage>/<stage>-<key>/<token>/ and then its marker. The winner is the least
  (marker mtime, token): one total order that every reader applies. Object mtimes have 1 s resolution, so a
  marker written up to 1 s later can still tie and win on the token; a builder therefore waits SETTLE_S
  before believing it won (a loser deletes its marker, then its attempt, and returns the winner), and a
  reader that sees a marker younger than that looks again after the same wait.
S3 endpoint and credentials come from the AWS_* environment variables only (see store_fs.s3_filesystem).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.fs as pafs
import yaml

from rayflow.atomic import atomic_write_text
from rayflow.store_cache import (NodePath, StoredArtifact, adopt_into_cache, cache_dir_for, cache_tmp_dir, download,
                                 local_path)
from rayflow.store_fs import (MARKER, StoreError, check_name, delete_attempt, jsonable, key_lock, list_markers,
                              new_tmp_dir, new_token, one_line, resolve, s3_endpoint, sweep_tmp_dirs)

__all__ = ["ArtifactStore", "NodePath", "StoreError", "StoredArtifact", "local_path", "open_store", "MARKER"]

log = logging.getLogger("rayflow")

SETTLE_S = 1.5  # > the 1 s mtime resolution of S3 (and moto) plus a request's latency
CLOCK_SKEW_S = 1.0  # tolerated gap between this machine's clock and the object store's


class ArtifactStore:
    """Committed, content-keyed stage outputs under one location (local path or URI)."""

    settle_s: float = SETTLE_S

    def __init__(self, location: str) -> None:
        self.location, self.fs, self.root, self.is_local = resolve(location)
        self._held: set[tuple[str, str]] = set()  # build locks this process holds (see holding)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.location!r})"

    def _uri(self, path: str) -> str:
        return path if self.is_local else self.location + path[len(self.root):]

    def _path_of(self, uri: str) -> str:
        if self.is_local:
            return resolve(uri)[2]
        if not uri.startswith(self.location):
            raise StoreError(f"{uri} is not inside output location {self.location}")
        return self.root + uri[len(self.location):]

    def _base(self, stage: str, key: str) -> str:
        check_name("stage", stage)
        check_name("key", key)
        return f"{self.root}/artifacts/{stage}/{stage}-{key}"

    def check_writable(self) -> None:
        """Fail at startup, in one line, rather than after an hour of training."""
        try:
            if self.is_local:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            elif isinstance(self.fs, pafs.S3FileSystem):
                bucket = self.root.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    where = f" at {s3_endpoint()}" if s3_endpoint() else ""
                    raise StoreError(f"bucket {bucket!r} does not exist{where}")
            probe = f"{self.root}/.probe-{socket.gethostname()}-{os.getpid()}-{new_token()}"
            with self.fs.open_output_stream(probe) as f:
                f.write(b"probe")
            self.fs.delete_file(probe)
        except Exception as e:  # noqa: BLE001 - arrow raises ArrowInvalid etc. besides OSError
            reason = "a file is in the way" if isinstance(e, FileExistsError) else one_line(e)
            raise StoreError(f"output location {self.location} is not writable: {reason}") from e

    def _load(self, stage: str, key: str, path: str) -> StoredArtifact:
        with self.fs.open_input_stream(f"{path}/{MARKER}") as f:
            doc = json.loads(f.read().decode())
        return StoredArtifact(stage, key, self._uri(path), None, doc.get("metrics"), reused=True)

    def lookup(self, stage: str, key: str) -> StoredArtifact | None:
        """The committed artifact for (stage, key), or None."""
        base = self._base(stage, key)
        try:
            if self.is_local:
                final = Path(base)
                if not (final / MARKER).is_file():
                    return None
                doc = json.loads((final / MARKER).read_text())
                return StoredArtifact(stage, key, base, final, doc.get("metrics"), reused=True)
            for _ in range(3):
                markers = list_markers(self.fs, base)
                if markers and time.time_ns() - markers[0][0] < (self.settle_s + CLOCK_SKEW_S) * 1e9:
                    time.sleep(self.settle_s)  # young: a tying marker may still appear and win
                    markers = list_markers(self.fs, base)
                if not markers:
                    return None
                try:
                    return self._load(stage, key, f"{base}/{markers[0][1]}")
                except FileNotFoundError:
                    continue  # a loser removed itself between listing and reading
            return None
        except json.JSONDecodeError:
            log.warning("[%s] unreadable %s under %s; treating as not committed", stage, MARKER, base)
            return None
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot read {stage}-{key} from {self.location}: {one_line(e)}") from e

    @contextlib.contextmanager
    def holding(self, keys: list[tuple[str, str]], on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Holds the build locks of several (stage, key) pairs at once (sorted: no lock-order
        deadlock), for work that produces several artifacts together (a batched training run): a
        concurrent run building any of them waits, then finds them committed. No-op on object
        stores, which have no locks (there the first committed marker wins)."""
        if not self.is_local:
            yield
            return
        with contextlib.ExitStack() as stack:
            for stage, key in sorted(set(keys) - self._held):
                parent = Path(self._base(stage, key)).parent
                parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(key_lock(parent / f".lock-{key}", on_wait, f"{stage}-{key}"))
                self._held.add((stage, key))
                stack.callback(self._held.discard, (stage, key))
            yield

    def build(self, stage: str, key: str, build: Callable[[Path], dict], *, config_doc: dict | None = None,
              on_wait: Callable[[str], None] | None = None, announce: bool = True) -> StoredArtifact:
        """The committed artifact for (stage, key) (reused=True), or builds and commits it.

        `build(tmp_dir)` writes files into a fresh local dir and returns metrics; an exception in it
        commits nothing and removes the dir. `announce=False`: the "wrote" line at debug level (the
        caller summarises a batch)."""
        art = self.lookup(stage, key)
        if art is not None:
            log.info("[%s] reusing %s", stage, art.uri)
            return art
        say = log.info if announce else log.debug
        if self.is_local:
            return self._build_local(stage, key, build, config_doc, on_wait, say)
        return self._build_remote(stage, key, build, config_doc, say)

    def _run_build(self, tmp: Path, stage: str, key: str, build: Callable[[Path], dict],
                   config_doc: dict | None) -> tuple[dict, str, str]:
        """Runs `build` and adds config.yaml and metrics.json; returns (metrics as JSON sees them, marker
        text, attempt token)."""
        metrics = build(tmp) or {}
        if config_doc is not None:
            (tmp / "config.yaml").write_text(yaml.safe_dump(config_doc, sort_keys=False))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=jsonable))
        token = new_token()
        doc = {"stage": stage, "key": key, "token": token, "time": time.time(), "host": socket.gethostname(),
               "pid": os.getpid(), "metrics": metrics}
        marker = json.dumps(doc, indent=2, default=jsonable)
        return json.loads(marker)["metrics"], marker, token

    def _build_local(self, stage: str, key: str, build: Callable[[Path], dict], config_doc: dict | None,
                     on_wait: Callable[[str], None] | None, say: Callable[..., None] = log.info) -> StoredArtifact:
        final = Path(self._base(stage, key))
        parent = final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"output location {self.location} is not writable: {one_line(e)}") from e
        held = (stage, key) in self._held
        with contextlib.nullcontext() if held else key_lock(parent / f".lock-{key}", on_wait, f"{stage}-{key}"):
            art = self.lookup(stage, key)  # the process we waited for committed it
            if art is not None:
                log.info("[%s] reusing %s (built by another process)", stage, art.uri)
                return art
            sweep_tmp_dirs(parent, key)
            tmp = new_tmp_dir(parent, key)
            try:
                metrics, marker, _ = self._run_build(tmp, stage, key, build, config_doc)
                (tmp / MARKER).write_text(marker)
                if final.exists():  # a leftover without a marker (lookup found none): never committed
                    shutil.rmtree(final)
                os.rename(tmp, final)  # files and marker appear together
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        say("[%s] wrote %s", stage, final)
        return StoredArtifact(stage, key, str(final), final, metrics)

    def _build_remote(self, stage: str, key: str, build: Callable[[Path], dict],
                      config_doc: dict | None, say: Callable[..., None] = log.info) -> StoredArtifact:
        base = self._base(stage, key)
        tmp = cache_tmp_dir(key)  # on the cache's disk: the winner's copy is adopted by a rename
        try:
            metrics, marker, token = self._run_build(tmp, stage, key, build, config_doc)
            attempt = f"{base}/{token}"
            try:
                pafs.copy_files(str(tmp), attempt, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
                with self.fs.open_output_stream(f"{attempt}/{MARKER}") as f:  # LAST
                    f.write(marker.encode())
            except Exception as e:
                delete_attempt(self.fs, attempt)
                raise StoreError(f"cannot commit {stage}-{key} to {self.location}: {one_line(e)}") from e
            try:  # committed now: whatever happens, the attempt stays valid
                winner = self._settle(base, token)
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"cannot list {base} on {self.location}: {one_line(e)}") from e
            if winner != token:
                log.info("[%s] %s-%s was committed first by attempt %s; discarding ours", stage, stage, key, winner)
                delete_attempt(self.fs, attempt)
                shutil.rmtree(tmp, ignore_errors=True)
                return self._load(stage, key, f"{base}/{winner}")
            uri = self._uri(attempt)
            path = adopt_into_cache(tmp, cache_dir_for(uri))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        say("[%s] wrote %s", stage, uri)
        return StoredArtifact(stage, key, uri, path, metrics)

    def _settle(self, base: str, token: str) -> str:
        """The winning token, final: an earlier marker means we lost now; otherwise wait out the mtime
        resolution so a tying marker written just after ours is seen before we claim the win."""
        markers = list_markers(self.fs, base)
        mine = next((m for m in markers if m[1] == token), None)
        if mine is None:
            raise StoreError(f"marker {base}/{token}/{MARKER} vanished right after it was written")
        if markers[0] < mine:
            return markers[0][1]
        time.sleep(self.settle_s)
        markers = list_markers(self.fs, base)
        return markers[0][1] if markers else token

    def local_path(self, uri: str) -> Path:
        """A local directory with the files of the artifact at `uri` (downloaded once, cached)."""
        if self.is_local:
            return Path(self._path_of(uri))
        return download(self.fs, self._path_of(uri), uri)

    def ray_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for ray.train.RunConfig; a filesystem we configured (endpoint,
        timeouts) instead of letting Ray build its own from a URI."""
        if self.is_local:
            return str(Path(self.root) / "ray_storage"), None
        return f"{self.root}/ray_storage", self.fs

    def write_text(self, relpath: str, text: str) -> str:
        """Small result files (results.json, report.html); returns their location."""
        path = f"{self.root}/{relpath.lstrip('/')}"
        try:
            if self.is_local:
                atomic_write_text(Path(path), text)
            else:  # an object PUT is atomic already
                with self.fs.open_output_stream(path) as f:
                    f.write(text.encode())
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot write {relpath} to {self.location}: {one_line(e)}") from e
        return self._uri(path)

    def read_text(self, relpath: str) -> str | None:
        path = f"{self.root}/{relpath.lstrip('/')}"
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read().decode()
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot read {relpath} from {self.location}: {one_line(e)}") from e


_stores: dict[str, ArtifactStore] = {}
_stores_lock = threading.Lock()


def open_store(location: str) -> ArtifactStore:
    """One store per location in this process (S3 clients are costly to build)."""
    location = str(location)
    norm = os.path.abspath(os.path.expanduser(location)) if "://" not in location else location.rstrip("/")
    with _stores_lock:
        if norm not in _stores:
            _stores[norm] = ArtifactStore(location)
        return _stores[norm]

"""The download cache of object-store artifacts, and the artifact handles stages pass around.

A committed attempt never changes, so its uri keys one local copy per machine (`$RAYFLOW_CACHE`, default
~/.cache/rayflow). `StoredArtifact.path` is that copy on the machine that asks; code that may run on
another node (Train workers, Ray tasks and actors) gets a `NodePath` instead, which resolves, and downloads
if needed, on the machine that opens it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from rayflow.store_fs import MARKER, StoreError, key_lock, new_tmp_dir, one_line, resolve


def cache_root() -> Path:
    return Path(os.environ.get("RAYFLOW_CACHE") or Path.home() / ".cache" / "rayflow").expanduser().absolute()


def cache_tmp_dir(key: str) -> Path:
    """A temp dir on the cache's disk (so it can be renamed into the cache), per host so that a cache on a
    shared home is swept only of this host's dead builders and downloads."""
    parent = cache_root() / "tmp" / socket.gethostname()
    if parent.is_dir():
        for d in parent.glob(".tmp-*"):
            m = re.search(r"-(\d+)-[0-9a-f]{8}$", d.name)
            if m and not pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)
    return new_tmp_dir(parent, key)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def cache_dir_for(uri: str) -> Path:
    """Committed attempts never change, so the uri alone keys the cache."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(uri.rstrip("/").split("/")[-2:]))[-80:]
    return cache_root() / "artifacts" / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{tail}"


def adopt_into_cache(tmp: Path, final: Path) -> Path:
    """Renames a complete local copy into the cache; if another process got there first, use theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def download(fs: pafs.FileSystem, path: str, uri: str) -> Path:
    """A local copy of the committed attempt at `path` (files and marker), fetched once per machine: the
    processes of one machine (a node's actors, a Train worker) that want it at once wait for one download."""
    final = cache_dir_for(uri)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with key_lock(final.parent / f".lock-{final.name}", None, uri):
        return final if final.is_dir() else _fetch(fs, path, uri, final)


def _fetch(fs: pafs.FileSystem, path: str, uri: str, final: Path) -> Path:
    try:
        info = fs.get_file_info(f"{path}/{MARKER}")
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"cannot read artifact {uri}: {one_line(e)}") from e
    if info.type != pafs.FileType.File:
        raise StoreError(f"{uri} is not a committed artifact (no {MARKER}; deleted, or never finished)")
    tmp = cache_tmp_dir(final.name)
    try:
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):
            raise StoreError(f"cannot download artifact {uri}: {one_line(e)}") from e
        raise
    return adopt_into_cache(tmp, final)


def local_path(uri: str) -> Path:
    """The artifact at `uri` as a directory on this machine: the path itself on a local store (no I/O), on
    an object store this machine's cached download (see `download`)."""
    _, fs, path, is_local = resolve(uri)
    return Path(path) if is_local else download(fs, path, uri)


@dataclass(frozen=True)
class NodePath(os.PathLike):
    """An artifact's directory, or the file `name` in it, as a path that resolves on the machine that
    opens it: `os.fspath()` / `Path()` give `local_path(uri)` (/ name) there. What stages hand to code
    that may run on another node (Train workers, tasks, actors), never `StoredArtifact.path`, which is a
    directory in the driver's download cache on object stores. `str()` is the location itself, so a
    consumer that wants a plain string fails loudly on an object store instead of reading a driver path."""

    uri: str
    name: str = ""

    def __fspath__(self) -> str:
        base = local_path(self.uri)
        return str(base / self.name if self.name else base)

    def __str__(self) -> str:
        return f"{self.uri.rstrip('/')}/{self.name}" if self.name else self.uri


@dataclass(init=False)
class StoredArtifact:
    """A committed artifact. `path` is a local directory with its files; on an object store it is
    downloaded (once per machine, cached) only when first used, so a driver that hands `node_path()`s to
    Ray actors never pulls the bytes, and a pickled artifact re-resolves `path` on the node that unpickles it."""

    stage: str
    key: str
    uri: str
    metrics: dict
    reused: bool
    _path: Path | None = field(default=None, init=False, repr=False, compare=False)  # replace() re-resolves

    def __init__(self, stage: str, key: str, uri: str, path: Path | None = None, metrics: dict | None = None,
                 reused: bool = False) -> None:
        self.stage, self.key, self.uri, self._path = stage, key, uri, path
        self.metrics, self.reused = dict(metrics or {}), reused

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = local_path(self.uri)
        return self._path

    def file(self, name: str) -> Path:
        return self.path / name

    def node_path(self, name: str = "") -> NodePath:
        """`path` (or `file(name)`) for code that may run on another node: resolved where it is opened."""
        return NodePath(self.uri, name)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if "://" in self.uri:  # a download cache is only valid on this machine
            state["_path"] = None
        return state

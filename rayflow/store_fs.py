"""Filesystem plumbing for `rayflow.store`: resolving locations, S3 from the environment, local locks and
temp dirs (the download cache is `store_cache.py`). Kept apart so store.py reads as the commit protocol only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

log = logging.getLogger("rayflow")

MARKER = "_COMMITTED"
S3_CONNECT_TIMEOUT_S = 3.0  # an unreachable endpoint must fail in seconds, not minutes
S3_REQUEST_TIMEOUT_S = 10.0  # per socket read (the AWS SDK honours it only on Windows/macOS)
S3_MAX_ATTEMPTS = 3  # one try + two retries: rides out a blip, still fails fast

_fs_lock = threading.Lock()
_s3_cache: dict[tuple, pafs.S3FileSystem] = {}
_region_cache: dict[str, str | None] = {}


class StoreError(RuntimeError):
    """A store problem the user can fix (bad location, no access); the message names the location."""


def one_line(err: BaseException) -> str:
    """AWS/arrow errors span lines and carry request ids; a user needs the first line."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:400]


def resolve(location: str, what: str = "output location") -> tuple[str, pafs.FileSystem, str, bool]:
    """(normalised location, filesystem, root inside it, is_local) for a path or URI; `what` names it in
    errors (the data reader resolves `data.path` alike)."""
    location = str(location)
    if "://" not in location:
        p = os.path.abspath(os.path.expanduser(location))  # absolute: Ray workers run elsewhere
        return p, pafs.LocalFileSystem(), p, True
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"{what} {location}: file:// URIs must name a local path")
        p = os.path.abspath(unquote(parts.path))
        return p, pafs.LocalFileSystem(), p, True
    if scheme in ("s3", "s3a"):
        parts = urlsplit(location)
        if parts.query or parts.username or parts.password:
            raise StoreError(f"{what} {location}: put no options or credentials in the URI; "
                             "S3 settings come from the AWS_* environment variables")
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket:
            raise StoreError(f"{what} {location}: no bucket")
        root = f"{bucket}/{prefix}" if prefix else bucket
        return f"s3://{root}", s3_filesystem(bucket), root, False
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except Exception as e:  # noqa: BLE001 - arrow raises several types; the user needs one message
        raise StoreError(f"{what} {location} cannot be opened: {one_line(e)}") from e
    if isinstance(fs, pafs.LocalFileSystem):
        p = os.path.abspath(path)
        return p, fs, p, True
    root = path.rstrip("/")
    return location.rstrip("/"), fs, root, False


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    """An S3FileSystem configured from the environment only (never from configs, which get logged and
    committed). AWS_ENDPOINT_URL is passed explicitly because not every pyarrow build reads it."""
    env = os.environ
    endpoint = s3_endpoint()
    scheme = None
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
        endpoint = endpoint.rstrip("/")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    token = env.get("AWS_SESSION_TOKEN")
    if region is None and endpoint is None:  # real AWS answers in the bucket's own region only
        if bucket not in _region_cache:
            try:
                _region_cache[bucket] = pafs.resolve_s3_region(bucket)
            except Exception:  # noqa: BLE001 - a missing bucket is reported by check_writable
                _region_cache[bucket] = None
        region = _region_cache[bucket]
    cache_key = (endpoint, scheme, region, access, secret, token)
    with _fs_lock:
        fs = _s3_cache.get(cache_key)
        if fs is None:
            kw = dict(access_key=access, secret_key=secret, session_token=token) if access and secret else {}
            fs = pafs.S3FileSystem(
                region=region, endpoint_override=endpoint, scheme=scheme or "https",
                connect_timeout=S3_CONNECT_TIMEOUT_S, request_timeout=S3_REQUEST_TIMEOUT_S,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS), **kw)
            _s3_cache[cache_key] = fs
    return fs


def jsonable(obj: Any) -> Any:
    try:
        return float(obj)  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(obj)


def check_name(what: str, name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"invalid {what} {name!r}: it becomes a path component")


def list_markers(fs: pafs.FileSystem, base: str) -> list[tuple[int, str]]:
    """(mtime_ns, token) of every committed attempt under `base`, winner first."""
    dirs = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    tokens = [d.base_name for d in dirs if d.type == pafs.FileType.Directory]
    infos = fs.get_file_info([f"{base}/{t}/{MARKER}" for t in tokens]) if tokens else []
    return sorted((i.mtime_ns or 0, t) for i, t in zip(infos, tokens) if i.type == pafs.FileType.File)


def delete_attempt(fs: pafs.FileSystem, attempt: str) -> None:
    """Marker first, so the attempt never looks committed while its files are being removed."""
    for fn in (lambda: fs.delete_file(f"{attempt}/{MARKER}"), lambda: fs.delete_dir(attempt)):
        try:
            fn()
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001 - best effort; an unmarked attempt is invisible anyway
            log.warning("could not delete %s: %s", attempt, one_line(e))


def new_token() -> str:
    """Attempt ids: unique, and sortable by the client's start time so that ties read sensibly."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:10]


@contextmanager
def key_lock(lock_path: Path, on_wait: Callable[[str], None] | None, what: str) -> Iterator[None]:
    """flock: exclusive per key, and the kernel drops it when the holder dies (no stale locks)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another process that is building {what} (lock {lock_path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race with waiters)


def tmp_dir_pattern(key: str) -> re.Pattern:
    return re.compile(re.escape(f".tmp-{key}-") + r"\d+-[0-9a-f]{8}")


def new_tmp_dir(parent: Path, key: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    d = parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


def sweep_tmp_dirs(parent: Path, key: str) -> None:
    """Temp dirs of `key` left by killed builders. Call only while holding the key's lock: then no live
    builder (on any host sharing the directory) owns one, which pid checks cannot promise."""
    pat = tmp_dir_pattern(key)
    for d in parent.glob(f".tmp-{key}-*"):
        if pat.fullmatch(d.name):
            shutil.rmtree(d, ignore_errors=True)

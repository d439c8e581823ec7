"""Sharded prediction output: `part-00000.parquet`, ... under a local directory or an object-store
prefix, each written by whoever computed it (a Ray Data actor, or the in-process loop), and a
`_SUCCESS` marker written LAST by the driver, listing the shards and the row count.

Why a marker: shards land one by one (on S3 with no rename), so a reader that trusts the marker never
takes a half-written output (`read_shards` refuses an output without one). An existing complete
output is refused unless `overwrite`; overwriting deletes the marker first, then the old shards, so a
reader during the rewrite sees "no output", never a mix of old and new shards. Two writers to one
output at once are not guarded against.
"""

from __future__ import annotations

import json
import re

from rayflow.data.imageset import DataError

MARKER = "_SUCCESS"
PART = re.compile(r"part-\d{5}\.parquet")
TEMP = re.compile(r"\.(part-\d{5}\.parquet|_SUCCESS)\..*\.tmp")  # atomic_file's temp names, left by a killed writer


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _resolve(out: str):
    from rayflow.store_fs import StoreError, resolve

    try:
        return resolve(out, what="--out")
    except StoreError as e:
        raise DataError(str(e)) from None


def prepare(out: str, overwrite: bool) -> str:
    """The output's normalised location, made ready: refused when it holds a complete output (unless
    `overwrite`) or files that are not ours; a killed run's shards swept."""
    import pyarrow.fs as pafs

    from rayflow.data.folder import entries, info

    location, fs, root, local = _resolve(out)
    kind = info(fs, root, location).type
    if kind == pafs.FileType.File:
        raise DataError(f"--out {location} is a file; a sharded output is a directory (or give a .parquet/.csv name)")
    names = {i.base_name for i in entries(fs, root, location)} if kind == pafs.FileType.Directory else set()
    alien = sorted(n for n in names if n != MARKER and not PART.fullmatch(n) and not TEMP.fullmatch(n))
    if alien:
        raise DataError(f"--out {location} holds other files ({', '.join(alien[:3])}); name an empty or new directory")
    if MARKER in names:
        if not overwrite:
            raise DataError(f"--out {location} already holds a complete prediction output; pass --overwrite "
                            "to replace it, or name another directory")
        fs.delete_file(f"{root}/{MARKER}")  # first: from here on the old output reads as incomplete
    for n in sorted(names - {MARKER}):
        fs.delete_file(f"{root}/{n}")
    if local:
        fs.create_dir(root, recursive=True)
    return location


def _put(location: str, name: str, data: bytes) -> None:
    """One whole file: local through a temp file and a rename, an object store in one upload (the
    bytes are complete before the stream opens, so a failed write never leaves a truncated object)."""
    location, fs, root, local = _resolve(location)
    if local:
        from pathlib import Path

        from rayflow.atomic import atomic_file

        with atomic_file(Path(root) / name) as tmp:
            tmp.write_bytes(data)
        return
    with fs.open_output_stream(f"{root}/{name}") as f:
        f.write(data)


def write_shard(location: str, index: int, cols: dict) -> str:
    """One shard's columns (dict of numpy arrays) as Parquet; returns its file name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(list(v) if v.dtype == object else v) for k, v in cols.items()})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    _put(location, part_name(index), buf.getvalue().to_pybytes())
    return part_name(index)


def commit(location: str, parts: list[str], rows: int, columns: list[str]) -> None:
    """The marker, after every shard: the output is complete from this write on."""
    _put(location, MARKER, json.dumps({"rows": rows, "parts": parts, "columns": columns}).encode())


def read_shards(out: str):
    """A committed sharded output as one pandas DataFrame (the shards in order): tests, small outputs."""
    import pandas as pd
    import pyarrow.parquet as pq

    location, fs, root, _ = _resolve(out)
    try:
        with fs.open_input_stream(f"{root}/{MARKER}") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise DataError(f"{location} is not a complete prediction output (no {MARKER})") from None
    tables = [pq.read_table(f"{root}/{p}", filesystem=fs) for p in doc["parts"]]
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True) if tables else pd.DataFrame()

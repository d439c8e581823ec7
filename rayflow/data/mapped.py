"""Memory-mapped image arrays that stay out of the process's memory: written with pwrite, subsets
copied chunk by chunk.

Why: indexing a memmap with an index array copies the rows into memory. The labelled subsets a run
takes (n_per_class, val, held-out) are small and are copied; a large subset (the 80 % left for
training when a folder has no test split, the test split itself) would pull most of the set into the
driver, so it is copied into a temp .npy on the cache's disk instead, mapped, and unlinked (the
mapping keeps it alive until the last array using it is gone). Pages written or read through a
mapping stay in the process's RSS until unmapped, so writes go through the file (`RowWriter`) and the
source's pages are dropped from the mapping after each chunk (they stay in the page cache). The same
holds for training batches (`rows`): on a kernel with large page-cache folios one faulted row maps its
whole folio (up to 2 MB), so 20 random batches of 64 rows mapped all of a 300 MB cache; each batch's
pages are dropped again (0.3 ms a batch), and the process's memory stays one batch, not the file.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

IN_MEMORY_BYTES = 16 << 20  # subsets up to this size are plain arrays (a 100k-picture test split of 32 px is 61 MB)
CHUNK_BYTES = 16 << 20  # rows copied at a time: bounded in bytes, whatever the picture size


class RowWriter:
    """A uint8 .npy of a known shape, filled by blocks of rows at any position (in any order)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # the header, the size
        self.offset, self.row = x.offset, int(np.prod(shape[1:]))
        del x
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        os.pwrite(self.fd, np.ascontiguousarray(rows, np.uint8).tobytes(), self.offset + start * self.row)

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def rows_per_chunk(x: np.ndarray) -> int:
    return max(1, CHUNK_BYTES // max(1, x[:1].nbytes))


def drop_pages(x: np.ndarray) -> None:
    """Unmaps the pages of read-only memmap `x` this process touched (they stay in the page cache)."""
    m = getattr(x, "_mmap", None)
    if m is not None and x.mode == "r" and hasattr(m, "madvise"):
        m.madvise(mmap.MADV_DONTNEED)


def rows(x: np.ndarray, idx) -> np.ndarray:
    """A copy of `x[idx]` (rows or a slice); pages of a read-only memmap this touched are unmapped again."""
    out = np.array(x[idx], order="C")
    drop_pages(x)
    return out


def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`x[idx]` (idx: a boolean mask or row indices), memory-mapped when `x` is and the rows are many."""
    idx = np.asarray(idx)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if not isinstance(x, np.memmap) or len(idx) * x[:1].nbytes <= IN_MEMORY_BYTES:
        return np.ascontiguousarray(x[idx])
    from rayflow.store_cache import cache_tmp_dir

    d = cache_tmp_dir("subset")
    path = d / "rows.npy"
    out = RowWriter(path, (len(idx), *x.shape[1:]))
    step = rows_per_chunk(x)
    for i in range(0, len(idx), step):
        out.write(i, x[idx[i:i + step]])
        drop_pages(x)
    out.close()
    mapped = np.load(path, mmap_mode="r")
    os.unlink(path)
    os.rmdir(d)
    return mapped

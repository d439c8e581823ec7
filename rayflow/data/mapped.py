"""Row subsets of a memory-mapped image set that stay memory-mapped.

Why: indexing a memmap with an index array copies the rows into memory. The labelled subsets a run
takes (n_per_class, val, held-out) are small and are copied; a large subset (the 80 % left for
training when a folder has no test split, the test split itself) would pull most of the set into the
driver, so it is copied chunk by chunk into a temp .npy on the cache's disk instead, mapped, and
unlinked (the mapping keeps it alive until the last array using it is gone).
"""

from __future__ import annotations

import os

import numpy as np

IN_MEMORY_BYTES = 256 << 20  # subsets up to this size are plain arrays
CHUNK_ROWS = 4096


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
    out = np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=(len(idx), *x.shape[1:]))
    for i in range(0, len(idx), CHUNK_ROWS):
        out[i:i + CHUNK_ROWS] = x[idx[i:i + CHUNK_ROWS]]
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    os.unlink(path)
    os.rmdir(d)
    return mapped

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

IN_MEMORY_BYTES = 64 << 20  # subsets up to this size are plain arrays
CHUNK_BYTES = 16 << 20  # rows copied at a time: bounded in bytes, whatever the picture size


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
    step = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    for i in range(0, len(idx), step):
        out[i:i + step] = x[idx[i:i + step]]
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    os.unlink(path)
    os.rmdir(d)
    return mapped

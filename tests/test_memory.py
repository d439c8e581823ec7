"""release_freed_memory really gives freed, fragmented heap pages back to the OS (glibc)."""

from __future__ import annotations

import os
import platform

import pytest

from rayflow.memory import release_freed_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_fragmented_heap_is_returned():
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB below the mmap threshold
    pinned = blocks[::64]  # one live block in every 64: free() alone cannot shrink the heap
    before = _rss_mb()
    del blocks
    assert _rss_mb() > before - 50  # glibc kept the freed pages
    release_freed_memory()
    assert _rss_mb() < before - 100
    assert len(pinned) == 782


def test_pyarrow_pool_is_released_too(monkeypatch):
    """pyarrow allocates through its own pool (mimalloc/jemalloc), which malloc_trim cannot reach: a
    synth actor's Parquet buffers stayed resident until the pool is told to let go."""
    import sys
    import types

    released = []
    pool = types.SimpleNamespace(release_unused=lambda: released.append(True))
    monkeypatch.setitem(sys.modules, "pyarrow", types.SimpleNamespace(default_memory_pool=lambda: pool))
    release_freed_memory()
    assert released == [True]
    monkeypatch.delitem(sys.modules, "pyarrow")  # not imported: nothing to release, and no import
    release_freed_memory()
    assert released == [True] and "pyarrow" not in sys.modules

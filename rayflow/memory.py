"""Give freed heap memory back to the OS between units of long streaming work.

Why: glibc keeps freed blocks in its per-thread arenas, so a process that runs many batches of
varying size (the synth stage: every shard's tail is another size) keeps the high-water mark of
every arena as RSS although little is live. ``malloc_trim(0)`` returns those pages; it costs
about a millisecond, so it runs once per shard, not per batch. No-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS (glibc's, and pyarrow's own allocator's when pyarrow is in
    use: mimalloc or jemalloc keep freed pages too); True when glibc released something."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        try:
            pa.default_memory_pool().release_unused()
        except (AttributeError, NotImplementedError):
            pass
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False

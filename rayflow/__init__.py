"""rayflow: cGAN-based knowledge distillation on Ray."""

import os as _os

# Bound torch's CPU kernel caches (oneDNN primitives are cached per input shape). The synth stage
# feeds batches of many different sizes (the tail of every shard), and with the default capacity
# each process grew by ~1 GB per 100k samples (1.2 -> 2.5 GB RSS); with 16 entries it stays flat
# (~0.4 GB per process, docs/results.md). Set before any conv runs; a user's own value wins.
for _var in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
    _os.environ.setdefault(_var, "16")

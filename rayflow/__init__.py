"""rayflow: cGAN-based knowledge distillation on Ray.

The Python API (imported lazily: `import rayflow` stays light, no torch or Ray until a call):

    result = rayflow.distill("tiny", **{"output_dir": "/tmp/x", "student.train.steps": 50})
    model = rayflow.load_student(result.student_dir)   # uint8 (N, C, H, W) images in, logits out
    df = rayflow.predict(result.student_dir, ["images/"])  # a pandas DataFrame
"""

import os as _os

# Bound torch's CPU kernel caches (oneDNN primitives are cached per input shape). The synth stage
# feeds batches of many different sizes (the tail of every shard), and with the default capacity
# each process grew by ~1 GB per 100k samples (1.2 -> 2.5 GB RSS); with 16 entries it stays flat
# (~0.4 GB per process, docs/results.md). Set before any conv runs; a user's own value wins.
for _var in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
    _os.environ.setdefault(_var, "16")


def _find_version() -> str:
    """The installed distribution's version, else pyproject.toml's (a source checkout on PYTHONPATH)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rayflow")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        py = Path(__file__).resolve().parent.parent / "pyproject.toml"
        m = re.search(r'^version\s*=\s*"([^"]+)"', py.read_text(), re.M) if py.is_file() else None
        return m.group(1) if m else "0+unknown"


__version__ = _find_version()
_API = ("distill", "load_student", "predict", "DistillResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from rayflow import api

        return getattr(api, name)
    raise AttributeError(f"module 'rayflow' has no attribute {name!r}")

"""Cached pipeline stages, declared in one graph (`graph.py`) and built by the runner (`runner.py`).

Importing the package registers every stage, so the graph is complete wherever it is walked.
"""

from rayflow.stages import graph  # noqa: F401
from rayflow.stages import supervised, gan, dre, synth  # noqa: F401,E402  (register their stages)

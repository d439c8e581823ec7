"""Cached pipeline stages, declared in one graph (`graph.py`) and built by the runner (`runner.py`).

Importing the package registers every stage, so the graph is complete wherever it is walked.
"""

from rayflow.stages import dre, gan, graph, supervised, synth, y2h  # noqa: F401  (register their stages)

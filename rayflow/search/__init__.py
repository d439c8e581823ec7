"""Hyper-parameter search for the cGAN-KD student (ρ, M, real_fraction, kd_weight). No Ray imports.

* :mod:`.space`        — :class:`SearchSpace` (ranges / explicit grids, validation, grid/sample/clip);
* :mod:`.searchers`    — the ask/tell :class:`Searcher` protocol; grid, random, TPE (Optuna) searchers;
  :func:`make_searcher` by name;
* :mod:`.bound_guided` — :class:`BoundGuidedSearcher`: the error bound as a decaying (πBO) prior plus
  a refitted bound → measured-error model;
* :mod:`.replay`       — offline replay of searchers against a recorded grid (trials-to-best).
"""

from .bound_guided import BoundGuidedSearcher
from .replay import compare, grid_best, pooled_std, replay, summary, trials_to_reach
from .searchers import SEARCHERS, BaseSearcher, GridSearcher, RandomSearcher, Searcher, TPESearcher, make_searcher
from .space import DIMS, SearchSpace

__all__ = [
    "DIMS",
    "SEARCHERS",
    "BaseSearcher",
    "BoundGuidedSearcher",
    "GridSearcher",
    "RandomSearcher",
    "SearchSpace",
    "Searcher",
    "TPESearcher",
    "compare",
    "grid_best",
    "make_searcher",
    "pooled_std",
    "replay",
    "summary",
    "trials_to_reach",
]

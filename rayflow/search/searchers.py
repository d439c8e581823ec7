"""Ask/tell searchers over a :class:`~rayflow.search.space.SearchSpace`. No Ray imports.

Every searcher implements :class:`Searcher` (``ask``/``tell``/``state``/``load``) and, when given
``candidates`` (a finite list of config dicts, e.g. a recorded grid), proposes only candidates,
never one twice (pending = asked but not yet told counts as used) and never outside the space;
``ask()`` returns None when nothing is left. ``tell(config, error)`` with a non-finite error (or
None) records a failed trial: the config is used up but not modelled. ``state()`` is JSON-able;
``load(state)`` on a searcher built with the same arguments resumes exactly (same next proposals).

TPE and candidates: Optuna's ``TPESampler`` samples in the continuous space (ρ linear, M and the latent scale log) and
the proposal is *snapped* to the nearest unused candidate (Euclidean distance in the unit cube of
:meth:`SearchSpace.to_unit`); the study is told the snapped config (``add_trial``), the raw sampled
trial is closed as FAIL (TPE ignores failed trials). We snap instead of a ``CategoricalDistribution``
over candidate indices because a categorical TPE has no notion of neighbours: every untried index
would look alike, so it could not generalise from tried configs to nearby untried ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .space import LOG_DIMS, SearchSpace

__all__ = ["SEARCHERS", "BaseSearcher", "GridSearcher", "RandomSearcher", "Searcher", "TPESearcher", "make_searcher"]


@runtime_checkable
class Searcher(Protocol):
    def ask(self) -> dict | None: ...

    def tell(self, config: dict, error: float) -> None: ...

    def state(self) -> dict: ...

    def load(self, state: dict) -> None: ...


def _finite(error: Any) -> float | None:
    try:
        e = float(error)
    except (TypeError, ValueError):
        return None
    return e if math.isfinite(e) else None


class BaseSearcher:
    """Bookkeeping shared by all searchers: candidates, pending asks, told history, state fingerprint."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0, candidates: Sequence[Mapping] | None = None):
        self.space = space
        self.seed = int(seed)
        self.candidates: list[dict] | None = None
        self._index: dict[tuple, int] = {}
        if candidates is not None:
            self.candidates = []
            for c in candidates:
                if not space.contains(c):
                    raise ValueError(
                        f"{self.name}: candidate {dict(c)!r} is outside the search space {space.to_dict()}"
                    )
                k = space.key(c)
                if k not in self._index:
                    self._index[k] = len(self.candidates)
                    self.candidates.append(space.from_key(k))
            if not self.candidates:
                raise ValueError(f"{self.name}: empty candidate list")
        self.history: list[tuple[dict, float | None]] = []  # told (config, error or None if failed)
        self._pending: dict[tuple, dict] = {}
        self._used: set[tuple] = set()  # keys told or pending

    # ---------------------------------------------------------------- bookkeeping
    def _free(self) -> list[int]:
        assert self.candidates is not None
        return [i for i, k in enumerate(self._index) if k not in self._used]  # _index: candidate keys, in order

    def _propose(self, config: dict) -> dict:
        k = self.space.key(config)
        self._pending[k] = dict(config)
        self._used.add(k)
        return dict(config)

    def tell(self, config: Mapping, error: float | None) -> None:
        k = self.space.key(config)
        self._pending.pop(k, None)
        self._used.add(k)
        cfg = self.space.from_key(k)
        self.history.append((cfg, _finite(error)))
        self._on_tell(cfg, _finite(error))

    def _on_tell(self, config: dict, error: float | None) -> None:  # for subclasses
        pass

    def release(self, config: Mapping) -> None:
        """Forget a pending (asked, never told) config so it can be proposed again, e.g. a trial that was
        cancelled and will not be resumed. No-op for a config that was told or never asked."""
        k = self.space.key(config)
        if self._pending.pop(k, None) is not None and all(self.space.key(c) != k for c, _ in self.history):
            self._used.discard(k)

    @property
    def pending(self) -> list[dict]:
        return list(self._pending.values())

    def observations(self) -> list[tuple[dict, float]]:
        """Told configs with a finite error, in order."""
        return [(c, e) for c, e in self.history if e is not None]

    # ---------------------------------------------------------------- state
    def _fingerprint(self) -> str:
        cand = None if self.candidates is None else [self.space.key(c) for c in self.candidates]
        blob = json.dumps([self.name, self.seed, self.space.to_dict(), cand, self._extra_fingerprint()], default=str)
        return hashlib.sha1(blob.encode()).hexdigest()

    def _extra_fingerprint(self) -> Any:
        return None

    def state(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self._fingerprint(),
            "history": [[c, e] for c, e in self.history],
            "pending": self.pending,
            **self._extra_state(),
        }

    def _extra_state(self) -> dict:
        return {}

    def load(self, state: Mapping) -> None:
        if state.get("name") != self.name or state.get("fingerprint") != self._fingerprint():
            raise ValueError(
                f"{self.name}: state was saved by a differently configured searcher "
                f"({state.get('name')!r}); build it with the same space, seed, candidates and prior"
            )
        self.history = [(self.space.from_key(self.space.key(c)), _finite(e)) for c, e in state["history"]]
        self._pending = {self.space.key(c): dict(c) for c in state["pending"]}
        self._used = set(self._pending) | {self.space.key(c) for c, _ in self.history}
        self._load_extra(state)

    def _load_extra(self, state: Mapping) -> None:
        pass


class GridSearcher(BaseSearcher):
    """Every candidate (default: ``space.grid()``) once, in an order fixed by ``seed`` (``shuffle=False``: grid order)."""

    name = "grid"

    def __init__(
        self, space: SearchSpace, seed: int = 0, candidates: Sequence[Mapping] | None = None, shuffle: bool = True
    ):
        super().__init__(space, seed, space.grid() if candidates is None else candidates)
        self.shuffle = bool(shuffle)
        n = len(self.candidates)
        self.order = [int(i) for i in np.random.default_rng(self.seed).permutation(n)] if shuffle else list(range(n))

    def _extra_fingerprint(self) -> Any:
        return self.shuffle

    def ask(self) -> dict | None:
        for i in self.order:
            c = self.candidates[i]
            if self.space.key(c) not in self._used:
                return self._propose(c)
        return None


class RandomSearcher(BaseSearcher):
    """Uniform draws without replacement from the candidates, or from the space (M log-uniform)."""

    name = "random"
    max_retries = 1000

    def __init__(self, space: SearchSpace, seed: int = 0, candidates: Sequence[Mapping] | None = None):
        super().__init__(space, seed, candidates)
        self.rng = np.random.default_rng(self.seed)

    def ask(self) -> dict | None:
        if self.candidates is not None:
            free = self._free()
            return self._propose(self.candidates[free[int(self.rng.integers(len(free)))]]) if free else None
        for _ in range(self.max_retries):
            c = self.space.sample(self.rng)
            if self.space.key(c) not in self._used:
                return self._propose(c)
        return None

    def _extra_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def _load_extra(self, state: Mapping) -> None:
        self.rng.bit_generator.state = state["rng"]


class TPESearcher(BaseSearcher):
    """Optuna ``TPESampler(seed=seed)`` through ``study.ask``/``add_trial``; candidates by nearest snap."""

    name = "tpe"
    max_retries = 50

    def __init__(
        self, space: SearchSpace, seed: int = 0, candidates: Sequence[Mapping] | None = None, **tpe_kwargs: Any
    ):
        super().__init__(space, seed, candidates)
        self.tpe_kwargs = tpe_kwargs
        self._unit = None if self.candidates is None else space.to_unit(self.candidates)
        self._reset(self._new_sampler())

    def _extra_fingerprint(self) -> Any:
        return sorted(self.tpe_kwargs.items())

    def _distributions(self) -> dict:
        from optuna.distributions import FloatDistribution, IntDistribution

        d = {}
        for name in self.space.dims:
            lo, hi = getattr(self.space, name)
            d[name] = IntDistribution(lo, hi, log=lo < hi) if name == "m" else \
                FloatDistribution(lo, hi, log=name in LOG_DIMS and lo < hi)
        return d

    def _new_sampler(self) -> Any:
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed, **self.tpe_kwargs)

    def _reset(self, sampler: Any) -> None:
        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per searcher
        try:
            self.study = optuna.create_study(direction="minimize", sampler=sampler)
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.sampler = sampler
        self._dists = self._distributions()

    def _on_tell(self, config: dict, error: float | None) -> None:
        import optuna

        if not self.space.contains(config):
            return  # e.g. a hand-picked point outside the ranges: TPE's distributions cannot hold it
        state = optuna.trial.TrialState.COMPLETE if error is not None else optuna.trial.TrialState.FAIL
        params = {d: config[d] for d in self.space.dims}
        self.study.add_trial(
            optuna.trial.create_trial(params=params, distributions=self._dists, value=error, state=state)
        )

    def ask(self) -> dict | None:
        import optuna

        if self.candidates is not None and not self._free():
            return None
        for _ in range(self.max_retries):
            trial = self.study.ask(self._dists)
            raw = {d: trial.params[d] for d in self.space.dims}
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the told (snapped) config is added in tell()
            if self.candidates is not None:
                free = self._free()
                dist = np.linalg.norm(self._unit[free] - self.space.to_unit(raw)[None, :], axis=1)
                return self._propose(self.candidates[free[int(np.argmin(dist))]])
            cfg = self.space.clip(raw)
            if self.space.key(cfg) not in self._used:
                return self._propose(cfg)
        return None

    def _extra_state(self) -> dict:
        return {"sampler": base64.b64encode(pickle.dumps(self.sampler)).decode("ascii")}

    def _load_extra(self, state: Mapping) -> None:
        self._reset(pickle.loads(base64.b64decode(state["sampler"])))
        for cfg, err in self.history:
            self._on_tell(cfg, err)


SEARCHERS = ("grid", "random", "tpe", "bound")


def make_searcher(
    name: str,
    space: SearchSpace,
    seed: int = 0,
    candidates: Sequence[Mapping] | None = None,
    prior: Callable[[dict], Any] | Mapping[tuple, Any] | None = None,
    **kwargs: Any,
) -> BaseSearcher:
    """Searcher by name (``grid``, ``random``, ``tpe``, ``bound``); ``prior`` is required by (and only used by) ``bound``."""
    if name == "grid":
        return GridSearcher(space, seed, candidates, **kwargs)
    if name == "random":
        return RandomSearcher(space, seed, candidates, **kwargs)
    if name == "tpe":
        return TPESearcher(space, seed, candidates, **kwargs)
    if name == "bound":
        if prior is None:
            raise ValueError(
                "make_searcher('bound'): needs prior= (callable config -> predicted error, or {key: value})"
            )
        from .bound_guided import BoundGuidedSearcher

        return BoundGuidedSearcher(space, prior, seed, candidates, **kwargs)
    raise ValueError(f"unknown searcher {name!r}; choose one of {SEARCHERS}")

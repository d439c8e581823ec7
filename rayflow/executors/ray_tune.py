"""Ray Tune behind `Executor.tune`: a function trainable per trial, our ask/tell searcher as a Tune
`Searcher` (with save/restore), ASHA on samples seen, results under the store's storage path, and
`Tuner.restore` when a killed driver's experiment is found there."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher


class FinishingASHA(ASHAScheduler):
    """ASHA that stops weak trials at its rungs but never at a trial's last report (samples seen at
    `max_t`): a trial stopped there is killed while its student's Train run returns, before the stage
    commits the student, so the search's students would never be cached artifacts."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) >= self._max_t:
            self._num_stopped -= 1  # ASHA counted it as stopped; its debug line must not
            return TrialScheduler.CONTINUE  # it ends on its own, right after its commit
        return action


class AskTellSearcher(Searcher):
    """A `rayflow.search` searcher (ask/tell, state/load) as a Ray Tune Searcher."""

    def __init__(self, searcher: Any, metric: str, mode: str, to_error: Callable[[float], float]):
        super().__init__(metric=metric, mode=mode)
        self._inner, self.to_error = searcher, to_error
        self.configs: dict[str, dict] = {}

    def suggest(self, trial_id: str) -> dict | None:
        cfg = self._inner.ask()
        if cfg is None:
            return Searcher.FINISHED
        self.configs[trial_id] = cfg
        return dict(cfg)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cfg = self.configs.pop(trial_id, None)
        if cfg is None:
            return
        value = None if error or not result or self.metric not in result else self.to_error(result[self.metric])
        self._inner.tell(cfg, value)

    def get_state(self) -> dict:
        return {"state": self._inner.state(), "configs": dict(self.configs)}

    def set_state(self, state: dict) -> None:
        self._inner.load(state["state"])
        self.configs = dict(state["configs"])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def _trainable(config: dict, trial: Callable[[dict, Callable[[dict], None]], dict]) -> None:
    # intermediate reports (ASHA's rungs) come from the student's Train run through
    # TuneReportCallback (executors/ray_train.py); the final result closes the trial
    tune.report(trial(config))


def ray_tune(trial: Callable, *, searcher: Any, trials: int, metric: str, mode: str, to_error: Callable,
             storage: tuple[str, Any], name: str, asha: dict | None, max_concurrent: int,
             trial_cpus: float = 0.0) -> list[dict]:
    """Runs the search (or resumes the one a killed driver left under `storage`/`name`); one dict of
    config + final metrics per finished trial."""
    path, fs = storage
    trainable = tune.with_resources(tune.with_parameters(_trainable, trial=trial), {"CPU": trial_cpus})
    exp = f"{path.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(exp, storage_filesystem=fs):
        tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        scheduler = FinishingASHA(time_attr="samples_seen", metric=metric, mode=mode, **asha) if asha else None
        alg = ConcurrencyLimiter(AskTellSearcher(searcher, metric, mode, to_error), max_concurrent=max_concurrent)
        tuner = tune.Tuner(trainable,
                           tune_config=tune.TuneConfig(search_alg=alg, scheduler=scheduler, num_samples=trials,
                                                       max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                                                     verbose=0))
    grid = tuner.fit()
    out = []
    for r in grid:
        if r.error is None and r.metrics:
            out.append({**r.config, **{k: v for k, v in r.metrics.items() if not isinstance(v, dict)}})
    return out

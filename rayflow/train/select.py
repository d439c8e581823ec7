"""Which step's weights a training run keeps: the last (default) or the best on validation data.

`train.select: best_val` is how a student's step count is chosen without the test set: the loop
scores the validation split at every evaluation (`train.eval_every`), remembers the best weights,
and ends with them; the test metrics are then computed once, for those weights. The remembered
weights ride in every resume point, so a resumed run selects the same step as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn

from rayflow.train.tasks import Task


class BestOnVal:
    """The best validation score seen so far and the weights that scored it."""

    def __init__(self, task: Task):
        self.key = f"val_{task.metric}"
        self.higher = task.higher_is_better
        self.step: int | None = None
        self.score: float | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def better(self, score: float) -> bool:
        if self.score is None:
            return True
        return score > self.score if self.higher else score < self.score  # ties keep the earlier step

    def offer(self, step: int, metrics: dict, model: nn.Module) -> None:
        """Remember `model`'s weights if `metrics[val_<metric>]` beats the best so far."""
        if self.key not in metrics:
            raise RuntimeError(f"train.select=best_val needs {self.key} at every evaluation; the job has no "
                               "validation split (data.val_per_class or data.val_fraction)")
        score = float(metrics[self.key])
        if self.better(score):
            self.step, self.score = step, score
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore_into(self, model: nn.Module) -> None:
        if self.weights is not None:
            model.load_state_dict(self.weights)

    def state(self) -> dict:
        return {"step": self.step, "score": self.score, "weights": self.weights}  # offer() replaces, never mutates, it

    def load(self, state: dict | None) -> None:
        if state:
            self.step, self.score, self.weights = state["step"], state["score"], state["weights"]

    def summary(self) -> dict:
        return {"selected_step": self.step, f"selected_{self.key}": self.score}

"""A training loss that is NaN or infinite ends its stage at once, with one line for the user.

Training on a NaN loss only produces NaN weights (and a report of garbage); stopping names the
stage, the step and the likely cause. The checks read loss values the loops already copy to the
host for their running means (`loss.item()`), so they add no GPU synchronisation.
"""

from __future__ import annotations

import math


class LossNotFinite(RuntimeError):
    """A training stage's loss went NaN/inf; the message is the whole story (rayflow/cli.py USER_ERRORS)."""


HINT = "learning rate too high, or labels not normalised?"


def check_loss(value: float, stage: str, step: int, what: str = "loss", hint: str = HINT) -> None:
    """Raises LossNotFinite when `value` (a float already on the host) is NaN or infinite."""
    if not math.isfinite(value):
        raise LossNotFinite(f"{stage or 'training'}: {what} is {value} at step {step} ({hint})")


def user_error_in(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first `kinds` error inside `exc`: Ray Train wraps a worker's exception (a worker group
    error holding per-rank failures, a task error holding the cause); the CLI shows its one line."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None

"""The environment variables rayflow sets for Ray: its defaults everywhere, and the settings of an
embedded (one-machine) instance. Kept apart from runtime.py so the tests and the quiet-worker hook
read them without starting anything."""

from __future__ import annotations

import os

# Ray Train V2 polls every 2 s by default, which adds ~3 s to every fit() on a laptop.
_RAY_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Train V2 re-routes worker print() through logging, and each progress line reached the driver twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DEDUP_LOGS": "1",
    # Tune's own SIGINT handler ends Tuner.fit() quietly and the caller would carry on as if done;
    # rayflow.interrupt turns Ctrl-C into one line and exit code 130 instead
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}
# Not OMP_WAIT_POLICY=PASSIVE: measured 20 % fewer cGAN steps/s in a 2-thread Train worker than
# libgomp's default (spin briefly, then sleep); stages run one at a time, so spinning costs little.


def set_ray_env_defaults() -> dict[str, str]:
    """Sets the defaults the user has not set; returns those it set (for the workers' runtime_env)."""
    added = {k: v for k, v in _RAY_ENV_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    return added


# Train V2's settings for an embedded instance (one machine): no preemption watcher (one actor process
# more per fit, watching for node drains one machine never has) and the controller polling its workers
# every 0.25 s, not 2 s (a short fit's end was noticed up to 2 s late). Measured on 2 cores, an empty
# fit took 11-13 s instead of 13-16 s (9-10 s with executors/ray_train.py `lean_callbacks`). A cluster
# keeps the defaults above; a user's own setting wins everywhere.
ONE_MACHINE_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def one_machine_train_env(environ, ours=()) -> dict:
    """The one-machine settings `environ` lacks; those among `ours` (rayflow's own cluster defaults,
    set a moment earlier) give way to them."""
    return {k: v for k, v in ONE_MACHINE_TRAIN_ENV.items() if k not in environ or k in ours}

"""One machine's Train fits start two actor processes fewer (executors/ray_train.py `lean_callbacks`):
the callbacks dropped are Ray's own classes (renamed in Ray, the filter would silently keep them), and a
fit on the embedded session Ray really starts neither actor."""

from __future__ import annotations

import pytest
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

from rayflow.executors.ray_train import lean_callbacks


def _defaults() -> list:
    return TorchTrainer(lambda cfg: None)._create_default_callbacks()


def test_lean_callbacks_drop_the_cleaner_and_an_unused_dataset_manager_only():
    full = _defaults()
    kinds = {type(c) for c in full}
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= kinds  # what Ray 2.60 starts per fit
    lean = lean_callbacks(full, datasets=False)
    assert {type(c) for c in lean} == kinds - {DatasetsCallback, PlacementGroupCleanerCallback}
    assert DatasetsCallback in {type(c) for c in lean_callbacks(full, datasets=True)}  # fake sets need it
    assert len(lean) == len(full) - 2


@pytest.mark.slow
def test_an_embedded_fit_starts_no_dataset_manager_or_cleaner(ray_session, tmp_path):
    from ray._private.state import actors

    from rayflow.executors.ray_train import ray_fit
    from rayflow.config import ScalingConfig

    before = set(actors())
    out = ray_fit(lambda ctx, config: config["x"] + 1, {"x": 41}, name="lean", scaling=ScalingConfig(num_workers=1),
                  storage=(str(tmp_path), None))
    assert out.return_value == 42
    started = {a["ActorClassName"] for k, a in actors().items() if k not in before}
    assert "TrainController" in started and "RayTrainWorker" in started, started  # the fit's own actors
    assert not started & {"DatasetManager", "PlacementGroupCleaner"}, started

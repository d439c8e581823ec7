"""Train fits start no actor process that has nothing to do (executors/ray_train.py `lean_callbacks`):
the callbacks dropped are Ray's own classes (renamed in Ray, the filter would silently keep them), and a
fit on the embedded session Ray really starts neither the shard manager nor the cleaner."""

from __future__ import annotations

import pytest
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

from rayflow.executors.ray_train import lean_callbacks


def test_lean_callbacks_drop_an_unused_dataset_manager_and_the_cleaner_only_when_told():
    full = TorchTrainer(lambda cfg: None)._create_default_callbacks()
    kinds = {type(c) for c in full}
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= kinds  # what Ray 2.60 starts per fit

    def kept(**kw):
        return {type(c) for c in lean_callbacks(full, **kw)}

    assert kept(datasets=False, cleaner=False) == kinds - {DatasetsCallback, PlacementGroupCleanerCallback}
    assert kept(datasets=True, cleaner=False) == kinds - {PlacementGroupCleanerCallback}  # fake sets need it
    assert kept(datasets=False, cleaner=True) == kinds - {DatasetsCallback}  # Tune trials, clusters
    assert kept(datasets=True, cleaner=True) == kinds


@pytest.mark.slow
def test_an_embedded_fit_starts_no_dataset_manager_or_cleaner(ray_session, tmp_path):
    from ray._private.state import actors

    from rayflow.config import ScalingConfig
    from rayflow.executors.ray_train import ray_fit
    from rayflow.runtime import started_here

    assert started_here()  # the session's Ray is an embedded instance rayflow started
    before = set(actors())
    out = ray_fit(lambda ctx, config: config["x"] + 1, {"x": 41}, name="lean", scaling=ScalingConfig(num_workers=1),
                  storage=(str(tmp_path), None))
    assert out.return_value == 42
    started = {a["ActorClassName"] for k, a in actors().items() if k not in before}
    assert "TrainController" in started and "RayTrainWorker" in started, started  # the fit's own actors
    assert not started & {"DatasetManager", "PlacementGroupCleaner"}, started

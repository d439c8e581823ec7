"""executors/ray_train.py `ray_fit`: fits start no actor process that has nothing to do (`lean_callbacks`:
the callbacks dropped are Ray's own classes, renamed in Ray the filter would silently keep them; a fit
on the embedded session Ray really starts neither the shard manager nor the cleaner), and a fake set
of many shards reaches the worker in its files' order, whatever order Ray Data's reads finish in."""

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


@pytest.mark.slow
def test_a_fit_reads_a_many_shard_fake_set_in_its_files_order(ray_session, tmp_path):
    """The workers' seeded shuffle is only reproducible on the same input order: by default Ray Data
    hands blocks on as their read tasks finish (a tiny run's raw-fake student: 93.14 or 93.51 %)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayflow.config import ScalingConfig
    from rayflow.executors import FakeSpec
    from rayflow.executors.ray_train import ray_fit
    from rayflow.synth.io import META_KEY

    rng = np.random.default_rng(0)
    files, ids = [], []
    for f in range(16):  # uneven shards: reads that finish out of order
        n = 400 if f % 4 == 0 else 8
        sid = np.arange(f * 1000, f * 1000 + n)
        table = pa.table({"sample_id": sid, "label": np.zeros(n, np.int64), "orig_label": np.zeros(n, np.int64),
                          "image": pa.FixedSizeListArray.from_arrays(rng.integers(0, 255, n * 64, dtype=np.uint8), 64),
                          "teacher_logits": pa.FixedSizeListArray.from_arrays(np.zeros(n * 3, np.float32), 3)})
        path = tmp_path / f"shard-{f:03d}.parquet"
        pq.write_table(table.replace_schema_metadata({META_KEY: '{"image_shape": [1, 8, 8]}'}), path)
        files += [str(path)] * n
        ids.append(sid)
    spec = FakeSpec(np.array(files, dtype=object), np.concatenate(ids), np.zeros(len(files), np.int64))

    def seen(ctx, config):
        return [int(i) for b in ctx.dataset_shard("fake").iter_batches(batch_size=64, batch_format="numpy")
                for i in b["sample_id"]]

    out = ray_fit(seen, {}, name="order", scaling=ScalingConfig(num_workers=1), storage=(str(tmp_path), None),
                  datasets={"fake": spec})
    assert out.return_value == np.concatenate(ids).tolist()


def test_a_read_block_the_view_keeps_no_row_of_goes_on_empty_not_pickled(ray_session, tmp_path):
    """Ray Data splits a file's read into blocks; when a view's rows all lie in one, the other gave a
    tensor column of zero images, which Ray cannot build: it warned and pickled the block (seen in a
    user's first RGB run). Every block with rows holds a tensor column; the empty one holds no column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data._internal.tensor_extensions.arrow import get_arrow_extension_tensor_types

    from rayflow.executors import FakeSpec
    from rayflow.executors.ray_data import fake_dataset
    from rayflow.synth.io import META_KEY

    n = 64
    table = pa.table({"sample_id": np.arange(n), "label": np.zeros(n, np.int64), "orig_label": np.zeros(n, np.int64),
                      "image": pa.FixedSizeListArray.from_arrays(np.zeros(n * 12, np.uint8), 12),
                      "teacher_logits": pa.FixedSizeListArray.from_arrays(np.zeros(n * 3, np.float32), 3)})
    path = str(tmp_path / "shard-0.parquet")
    pq.write_table(table.replace_schema_metadata({META_KEY: '{"image_shape": [3, 2, 2]}'}), path)
    kept = np.arange(4)  # the file's first rows only
    spec = FakeSpec(np.array([path] * 4, dtype=object), kept, np.ones(4, np.int64))
    blocks = [ray_session.get(r) for r in fake_dataset(spec, override_num_blocks=4).materialize().to_arrow_refs()]
    assert len(blocks) > 1 and sum(b.num_rows for b in blocks) == 4, blocks
    tensor = get_arrow_extension_tensor_types()
    assert all(isinstance(b.schema.field("image").type, tensor) for b in blocks if b.num_rows), blocks
    assert all(b.num_columns == 0 for b in blocks if not b.num_rows), blocks

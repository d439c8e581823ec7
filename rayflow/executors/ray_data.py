"""Ray Data behind `Executor.map_batches` (actor pools over work items) and the fake-set reader
that streams a synth artifact's Parquet shards into Ray Train workers."""

from __future__ import annotations

import gc
import inspect
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy

from rayflow.executors.base import FakeSpec, PoolError, PoolSpec, StepSpec


def cluster_capacity() -> tuple[dict[str, float], dict[str, float]]:
    """(resources now, resources the cluster can grow to). On an autoscaling cluster the second
    counts the node types' max_workers (the autoscaler's config in the GCS), so GPU actors are not
    refused while the GPU nodes are scaled down: Ray Data's request makes the autoscaler add one."""
    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # a private API: without it, what the cluster has now is the limit
        most = {}
    return now, {k: max(now.get(k, 0.0), float(most.get(k, 0.0))) for k in set(now) | set(most)}


def min_actors(pool: PoolSpec, pools: int) -> int:
    """Actors each pool starts with. Every pool holds at least one actor for the whole pipeline: if
    their minimum does not fit the cluster (as far as it can scale up), Ray Data waits forever (the
    2-CPU actor-pool deadlock). All start at once when they fit the nodes up now with a CPU to spare
    for Ray Data's own tasks: the autoscaler adds the 2nd actor only after the 1st is busy, seconds
    of one idle core per pipeline."""
    have, most = cluster_capacity()
    for res, per_actor in (("CPU", pool.cpus_per_actor), ("GPU", pool.gpus_per_actor)):
        need = per_actor * pools
        if need > most.get(res, 0.0) + 1e-9:
            raise PoolError(f"the pipeline needs {need:g} {res} for its {pools} actor pool(s) ({per_actor:g} per "
                            f"actor, at least one actor each) but the Ray cluster has {most.get(res, 0.0):g}"
                            f"{' (scaled up)' if most.get(res, 0.0) > have.get(res, 0.0) else ''}; lower "
                            f"{'synth.cpus_per_actor' if res == 'CPU' else 'synth.num_gpus_per_actor'}")
    fits = int((have.get("CPU", 0.0) - 1.0) / (pool.cpus_per_actor * pools) + 1e-9)
    if pool.gpus_per_actor > 0:
        fits = min(fits, int(have.get("GPU", 0.0) / (pool.gpus_per_actor * pools) + 1e-9))
    return max(1, min(pool.max_actors, fits))


def ray_map_batches(items: list[dict], steps: Callable[[str, int | None], list[StepSpec]],
                    pool: PoolSpec) -> Iterator[dict]:
    """One Ray Data pipeline over `items` (one block each), one actor pool per step; the first step
    gets one item per call, later steps whole blocks; the driver receives only the last step's rows."""
    ctx = ray.data.DataContext.get_current()
    if not ctx.execution_no_progress_timeout_s or ctx.execution_no_progress_timeout_s > 600:
        ctx.execution_no_progress_timeout_s = 600  # fail a stuck pipeline in minutes, not 30
    device = "cuda" if pool.gpus_per_actor > 0 else "cpu"
    chain = steps(device, pool.threads_per_actor or max(1, int(pool.cpus_per_actor)))
    start = min_actors(pool, len(chain))
    restarts = _actor_restarts()
    before = _pool_actors() if _in_driver() else None
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for i, step in enumerate(chain):
        with warnings.catch_warnings():  # Ray 2.60 deprecates extra remote args, but names no max_restarts
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(step.cls, batch_size=1 if i == 0 else None, fn_constructor_kwargs=step.kwargs,
                                compute=ActorPoolStrategy(min_size=start, max_size=pool.max_actors),
                                num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor, **restarts)
    yield from ds.iter_rows()
    del ds
    if before is not None:
        _reap(before)


def _in_driver() -> bool:
    """Reaping is for a driver, which runs its pipelines one after another: Tune trials are processes
    of the driver's job, and one trial's pipeline may be running while another's ends."""
    return ray._private.worker.global_worker.mode == ray.SCRIPT_MODE


def _pool_actors() -> set[str]:
    """IDs of this job's live Ray Data pool actors (`MapWorker(...)`)."""
    try:
        from ray._private.state import state

        job = ray.get_runtime_context().get_job_id()
        return {a["ActorID"] for a in state.actor_table(None).values()
                if a.get("JobID") == job and a.get("State") != "DEAD"
                and str(a.get("ActorClassName", "")).startswith("MapWorker(")}
    except Exception:  # a private API: without it nothing is reaped
        return set()


def _reap(before: set[str], wait_s: float = 5.0) -> None:
    """Ends the pool actors a finished pipeline leaves alive. Ray Data releases them by dropping its
    handles (not `ray.kill`, to keep lineage reconstruction possible), so an actor lives on while any
    reference to it does: seen once in the test suite, a 0.5-CPU pool actor outliving its pipeline by
    minutes, and the next Ray Train run, which needed every CPU, never got its worker. Every row has
    been consumed here, so nothing needs the actors any more: a garbage collection, a short wait for
    the normal release, then a kill of what is left. Only in a driver (`_in_driver`)."""
    if not _in_driver():
        return
    gc.collect()
    deadline = time.monotonic() + wait_s
    while (left := _pool_actors() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        from ray._raylet import ActorID

        core = ray._private.worker.global_worker.core_worker
        for actor_id in left:
            try:
                core.kill_actor(ActorID.from_hex(actor_id), True)
            except Exception:  # already gone, or the API moved: the normal release still applies
                pass


def _actor_restarts() -> dict:
    """Ray Data's actor pools restart actors endlessly by default, and Ray 2.60 hands every pool
    actor its DataContext and UDF as object refs, so the driver logs `core_worker.cc ... has
    constructor arguments in the object store and max_restarts > 0` for any actor pool, whatever
    our constructor arguments (ray-project/ray#57733). On one node a restart can only follow a crash
    of the actor itself (an OOM kill, a segfault), which a restart mostly repeats, while the synth
    manifest lets a re-run redo just the unfinished shards: no restarts there, and no warning. On a
    multi-node cluster a lost node is worth surviving: Ray Data's default (and its warning) stays."""
    takes_remote_args = any(p.kind is inspect.Parameter.VAR_KEYWORD
                            for p in inspect.signature(ray.data.Dataset.map_batches).parameters.values())
    single_node = sum(1 for n in ray.nodes() if n.get("Alive")) <= 1
    return {"max_restarts": 0} if takes_remote_args and single_node else {}


def fake_dataset(spec: FakeSpec, **read_kwargs) -> ray.data.Dataset:
    """A view's rows as a Ray Dataset (for Ray Train ingestion): ``image`` uint8 ``(C, H, W)``,
    ``label`` (the view's), ``teacher_logits`` float32 ``(K,)``, the other columns as stored."""
    import json

    import pyarrow.parquet as pq

    from rayflow.synth.io import META_KEY, select_view_rows

    files, fs = parquet_source(list(dict.fromkeys(np.asarray(spec.files).tolist())))
    shape = json.loads(pq.read_schema(files[0], filesystem=fs).metadata[META_KEY])["image_shape"]
    order = np.argsort(spec.sample_ids, kind="stable")
    return ray.data.read_parquet(files, filesystem=fs, **read_kwargs).map_batches(
        select_view_rows, batch_format="pyarrow", batch_size=None,
        fn_kwargs={"ids": np.asarray(spec.sample_ids)[order], "labels": np.asarray(spec.labels)[order],
                   "image_shape": tuple(shape)})


def parquet_source(files: list) -> tuple[list[str], Any]:
    """(paths, pyarrow filesystem or None) for Ray Data's read tasks, which run on any node: a local
    store's own paths (shared by every node), or an object store's paths read through the store's
    filesystem; never the driver's download cache of an object store. `files`: NodePaths or paths."""
    from rayflow.store_fs import resolve

    located = [resolve(str(f)) for f in files]  # one store: one filesystem
    return [path for _, _, path, _ in located], None if located[0][3] else located[0][1]

"""Scale-out on one machine: a `ray.cluster_utils.Cluster` (a head and two worker raylets, each its own
set of processes) with the artifacts in S3 (the moto test server), since a local path would be visible to
every node anyway.

The head has no CPU, so every Train worker and every task that needs a CPU must run on a worker node; the
Train controller (0 CPU) stays on the head, next to the driver. Each rayflow driver runs as a subprocess
connected with `runtime.address` (the pytest process may hold an embedded Ray of its own, `ray_session`);
this process starts the cluster without connecting to it and reads Ray's actor table through the GCS.

What must hold: a stage set completes on the cluster with its Train workers on worker nodes; when the node
running a Train worker dies mid-training, Ray Train (FailureConfig(max_failures=1)) restarts the worker on
the surviving node, which resumes from the newest committed checkpoint (at most one checkpoint interval
lost), and the final weights are byte-identical to an uninterrupted run; when a node running synth actors
dies, Ray Data retries their batches on restarted actors, no recorded shard is written again, and the
shards are byte-identical to an uninterrupted run's.

All nodes share this machine's disk, where a path on the driver's disk would work on every node by accident.
So each driver keeps its download cache and temp dir (RAYFLOW_CACHE, TMPDIR) under /proc/self/cwd, run in
a folder of its own: the same path names another folder (the node's cwd, `nodes`) in every Ray worker
process, as a path of the driver's machine names nothing on another machine; and each worker node has a
download cache of its own. A stage that hands a Train worker, task or actor a driver-local path (an
artifact's download-cache copy, the synth work dir) fails here, as it would on a real cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from s3_server import s3_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

SETS = ["student.train.steps=300", "student.model.name=resnet8", "runtime.checkpoint_every=100",
        "gan.steps=240", "gan.checkpoint_every=80", "synth.pool_draws=600"]
NOKD = ["nokd", "--param", "seed=0"]
POOL = ["pool", "--param", "subsample=false", "--param", "segment=0"]
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):  # noqa: F811 - the AWS_* variables must be set before the raylets start
    """A head without CPUs and two 1-CPU worker nodes, their processes in the folder `nodes` (see the
    module's docstring). Never touches Ray instances it did not start: the cluster's address file
    (/tmp/ray/ray_current_cluster, which `ray.init("auto")` of anyone on this machine would read, and which
    Cluster.shutdown deletes whoever wrote it) is left alone."""
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("multinode")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
        mp.setattr(ray._common.utils, "reset_ray_address", lambda *a, **k: None)
        (root / "nodes").mkdir()
        mp.chdir(root / "nodes")  # the raylets', and so every Ray worker process's, cwd
        c = Cluster(initialize_head=True, connect=False,
                    head_node_args=dict(num_cpus=0, include_dashboard=False, dashboard_agent_listen_port=None))
        c.rayflow_root = root
        try:
            for _ in range(2):
                add_worker(c)
            c.wait_for_nodes()
            for d in ("cache", "tmp"):
                (root / "driver" / d).mkdir(parents=True)
            yield c
        finally:
            c.shutdown()


def add_worker(c) -> None:
    """A 1-CPU worker node with a download cache of its own, its processes in `nodes`."""
    root = c.rayflow_root
    n = c.rayflow_nodes = getattr(c, "rayflow_nodes", 0) + 1
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "nodes")
        c.add_node(num_cpus=1, env_vars={"RAYFLOW_CACHE": str(root / f"node-cache-{n}")})


def driver_kw(c) -> dict:
    """subprocess arguments of a rayflow driver: a cache and temp dir no Ray worker process can see."""
    env = dict(os.environ, RAYFLOW_CACHE="/proc/self/cwd/cache", TMPDIR="/proc/self/cwd/tmp")
    return dict(cwd=c.rayflow_root / "driver", env=env)


def node_cached(c, stage: str) -> int:
    """How many of `stage`'s artifacts the worker nodes downloaded into their own caches."""
    return sum(1 for d in c.rayflow_root.glob(f"node-cache-*/artifacts/*-{stage}-*") if d.is_dir())


def location(s3: tuple[str, str], name: str) -> str:
    return f"s3://{s3[1]}/mn-{name}-{uuid.uuid4().hex[:8]}"


def command(c, out: str, *stage: str, sets: tuple[str, ...] = ()) -> list[str]:
    sets = [a for s in [*SETS, *sets, f"runtime.address={c.address}", f"output_dir={out}"] for a in ("--set", s)]
    return [sys.executable, "-m", "rayflow", "stage", *stage, "--config", "tiny", *sets]


def run(c, out: str, *stage: str, timeout: float = 300, sets: tuple[str, ...] = ()) -> str:
    p = subprocess.run(command(c, out, *stage, sets=sets), capture_output=True, text=True, timeout=timeout,
                       **driver_kw(c))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p.stdout + p.stderr


def train_workers(c, state: str | None = None) -> dict[str, str]:
    """{actor id: node id} of the Train workers in the cluster's actor table (dead ones too unless `state`)."""
    return {aid: a["Address"]["NodeID"] for aid, a in c.global_state.actor_table(None).items()
            if a["ActorClassName"] == TRAIN_WORKER and (state is None or a["State"] == state)}


def fs_root(out: str):
    from rayflow.store import open_store

    store = open_store(out)
    return store.fs, store.root


def latest_step(out: str) -> int | None:
    """The step of the newest checkpoint in Ray's committed record of a run under `out`, if any."""
    import pyarrow.fs as pafs

    fs, root = fs_root(out)
    try:
        runs = fs.get_file_info(pafs.FileSelector(f"{root}/ray_storage", allow_not_found=True))
        for info in runs:
            if info.type != pafs.FileType.Directory:
                continue
            try:
                with fs.open_input_stream(f"{info.path}/checkpoint_manager_snapshot.json") as f:
                    latest = json.loads(f.read()).get("latest_checkpoint_result")
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if latest:
                return int(latest["metrics"]["step"])
    except OSError:
        return None
    return None


def weights(out: str, stage: str, suffix: str = ".safetensors") -> dict[str, bytes]:
    """The files ending in `suffix` of the one committed version of `stage`'s artifact under `out`, by
    their path inside the version folder."""
    import pyarrow.fs as pafs

    fs, root = fs_root(out)
    base = f"{root}/artifacts/{stage}"
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        rel = info.path[len(base) + 1:].split("/")  # <stage>-<key>/<version>/...
        if info.type != pafs.FileType.File or not info.path.endswith(suffix) or \
                any(p.startswith(".") for p in rel) or len(rel) < 3:
            continue
        with fs.open_input_stream(info.path) as f:
            found[(rel[1], "/".join(rel[2:]))] = f.read()
    versions = {v for v, _ in found}
    assert len(versions) == 1, f"{stage}: expected one committed version under {base}, found {versions}"
    return {name: data for (_, name), data in sorted(found.items())}


def copy_artifacts(src: str, dst: str, stage: str) -> None:
    import pyarrow.fs as pafs

    fs, src_root = fs_root(src)
    _, dst_root = fs_root(dst)
    pafs.copy_files(f"{src_root}/artifacts/{stage}", f"{dst_root}/artifacts/{stage}",
                    source_filesystem=fs, destination_filesystem=fs)


@pytest.fixture(scope="module")
def reference(cluster, s3_server):  # noqa: F811
    """Teacher, GAN, a NOKD student and a pool segment, uninterrupted, on the cluster: (location, log, seconds)."""
    out = location(s3_server, "ref")
    t0 = time.time()
    log = run(cluster, out, "gan") + run(cluster, out, *NOKD) + run(cluster, out, *POOL)
    return out, log, time.time() - t0


def test_stages_run_on_worker_nodes_with_s3_store(cluster, reference):
    out, log, seconds = reference
    head = cluster.head_node.node_id
    workers = {n.node_id for n in cluster.worker_nodes}
    used = list(train_workers(cluster).values())
    assert len(used) >= 3, used  # teacher, GAN, student: one Train worker each
    assert set(used) <= workers and head not in used
    for stage in ("teacher", "gan", "nokd", "pool"):
        assert re.search(rf"wrote {re.escape(out)}/artifacts/{stage}/", log), log[-3000:]
        assert weights(out, stage, ".parquet" if stage == "pool" else ".safetensors")
    assert "resuming at step" not in log
    # the GAN's Train worker and the pool's actors read teacher and GAN from their own node's cache
    assert node_cached(cluster, "teacher") and node_cached(cluster, "gan")
    print(f"reference: teacher + GAN + NOKD + pool on the cluster in {seconds:.0f} s; Train workers on "
          f"{len(set(used))} of {len(workers)} worker nodes")


def kill_train_node_mid_run(cluster, out: str, stage: list[str], tmp_path: Path) -> tuple[str, int, list]:
    """Starts `stage`, waits for Ray's committed record to hold a checkpoint, removes the worker node that
    runs the Train worker (SIGKILL, no graceful shutdown), waits for the run to end.
    Returns (log, step seen at the kill, [killed node id, surviving node id, node ids of the run's Train
    workers in start order])."""
    before = set(train_workers(cluster))
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as f:
        proc = subprocess.Popen(command(cluster, out, *stage), stdout=f, stderr=subprocess.STDOUT,
                                **driver_kw(cluster))
    try:
        t0, step = time.time(), None
        while step is None:
            assert proc.poll() is None, f"finished before the kill point:\n{log_path.read_text()[-3000:]}"
            assert time.time() - t0 < 240, f"no checkpoint in 240 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
            step = latest_step(out)
        (node_id,) = train_workers(cluster, "ALIVE").values()
        (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
        cluster.remove_node(node, allow_graceful=False)
        t_kill = time.time()
        (survivor,) = [n.node_id for n in cluster.worker_nodes]
        code = proc.wait(timeout=240)
        text = log_path.read_text()
        assert code == 0, text[-5000:]
        print(f"{stage[0]}: node removed at checkpoint step {step}, {time.time() - t_kill:.0f} s to finish")
        ran = [n for aid, n in train_workers(cluster).items() if aid not in before]
        return text, step, [node_id, survivor, ran]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        add_worker(cluster)  # back to two worker nodes for the next test
        cluster.wait_for_nodes()


def resumed_step(log: str, stage: str) -> int:
    steps = [int(s) for s in re.findall(rf"\[{stage}[^\]]*\] resuming at step (\d+) ", log)]
    assert len(steps) == 1, log[-5000:]
    return steps[0]


@pytest.mark.parametrize("stage,inputs,every,total", [
    (["gan"], ("teacher",), 80, 240),
    (NOKD, ("teacher",), 100, 300),
], ids=["gan", "nokd"])
def test_node_lost_mid_training_resumes_bit_exact(cluster, reference, s3_server, tmp_path,  # noqa: F811
                                                  stage, inputs, every, total):
    ref = reference[0]
    out = location(s3_server, stage[0])
    for s in inputs:
        copy_artifacts(ref, out, s)
    log, seen, (killed, survivor, ran) = kill_train_node_mid_run(cluster, out, stage, tmp_path)
    assert 0 < seen < total
    step = resumed_step(log, stage[0])
    # at most one checkpoint interval lost: it resumed from the newest checkpoint committed when the node
    # died (or a later one, committed between our read and the kill)
    assert seen <= step < total and step % every == 0
    # one Train worker on the node that died, then one restarted on the node that survived
    assert sorted(ran) == sorted([killed, survivor]), ran
    assert weights(out, stage[0]) == weights(ref, stage[0])
    if stage[0] == "gan":  # the same per-class checkpoints chosen from Ray's record
        assert json.loads(weights(out, "gan", "metrics.json")["metrics.json"])["selected_step"] == \
            json.loads(weights(ref, "gan", "metrics.json")["metrics.json"])["selected_step"]


def synth_actor_nodes(c) -> dict[str, int]:
    """{node id: number} of the live synth actors (Ray Data's map workers), by node."""
    nodes: dict[str, int] = {}
    for a in c.global_state.actor_table(None).values():
        if a["State"] == "ALIVE" and a["ActorClassName"].startswith("MapWorker"):
            nodes[a["Address"]["NodeID"]] = nodes.get(a["Address"]["NodeID"], 0) + 1
    return nodes


def test_node_lost_mid_synthesis_keeps_finished_shards(cluster, reference, s3_server, tmp_path):  # noqa: F811
    """The pool's work folder is on the driver's machine for an S3 store (rayflow/stages/synth.work_dir;
    the actors ship the shards' bytes to the driver): its manifest records finished shards; every shard
    file is watched (inode, mtime) until the run ends."""
    import hashlib

    from rayflow.store_fs import resolve

    ref = reference[0]
    out = location(s3_server, "pool")
    for s in ("teacher", "gan"):
        copy_artifacts(ref, out, s)
    work = cluster.rayflow_root / "driver" / "tmp" / "rayflow-work" / \
        hashlib.sha256(resolve(out)[0].encode()).hexdigest()[:12]
    log_path = tmp_path / "run.log"
    seen: dict[str, set] = {}

    def watch() -> dict:
        for p in work.glob("pool-*/shards/*.parquet"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            seen.setdefault(p.name, set()).add((st.st_ino, st.st_mtime_ns))
        for m in work.glob("pool-*/manifest.json"):
            try:
                return {Path(r["file"]).name for r in json.loads(m.read_text())["shards"].values()}
            except (OSError, json.JSONDecodeError, KeyError):
                pass
        return set()

    with open(log_path, "w") as f:
        proc = subprocess.Popen(command(cluster, out, *POOL), stdout=f, stderr=subprocess.STDOUT,
                                **driver_kw(cluster))
    try:
        t0, recorded, nodes = time.time(), set(), {}
        while len(recorded) < 5 or not nodes:
            assert proc.poll() is None, f"finished before the kill point:\n{log_path.read_text()[-3000:]}"
            assert time.time() - t0 < 240, f"no shards in 240 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.1)
            recorded = watch()
            nodes = synth_actor_nodes(cluster) if len(recorded) >= 5 else {}
        node_id = max(nodes, key=nodes.get)
        (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
        cluster.remove_node(node, allow_graceful=False)
        t_kill = time.time()
        while proc.poll() is None and time.time() - t_kill < 240:
            watch()
            time.sleep(0.1)
        code = proc.wait(timeout=5)
        text = log_path.read_text()
        assert code == 0, text[-5000:]
        print(f"pool: node removed after {len(recorded)} recorded shards, {time.time() - t_kill:.0f} s to finish")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        add_worker(cluster)
        cluster.wait_for_nodes()
    for name in recorded:  # a shard recorded before the node died was never written again
        assert len(seen.get(name, ())) <= 1, (name, seen[name])
    mine, theirs = weights(out, "pool", ".parquet"), weights(ref, "pool", ".parquet")
    assert mine == theirs
    man = json.loads(weights(out, "pool", "manifest.json")["shards/manifest.json"])
    ids = [r["shard_id"] for r in man["shards"].values()]
    assert len(ids) == len(set(ids)) == len(mine)  # each shard once


def test_remote_inputs_resolve_on_their_node(cluster, reference, s3_server):  # noqa: F811
    """The stages not in `reference` that hand artifacts to other nodes: the density-ratio net's task
    (feature net, GAN), a subsampling pool's actors (ratio net, feature net, teacher, GAN) and a cGAN-KD
    student's Train ingestion (Ray Data reads the pool's Parquet shards on the worker nodes)."""
    ref = reference[0]
    out = location(s3_server, "inputs")
    for s in ("teacher", "gan"):
        copy_artifacts(ref, out, s)
    student = ["cgankd", *(a for p in ("seed=0", "subsample=true", "filter=false", "relabel=false",
                                       "orig_labels=false", "kd=false") for a in ("--param", p))]
    t0 = time.time()
    log = run(cluster, out, *student, sets=("dre.feature_net.name=teacher", "student.train.steps=40"), timeout=420)
    for stage in ("dre", "pool", "view", "cgankd"):
        assert re.search(rf"wrote {re.escape(out)}/artifacts/{stage}/", log), log[-3000:]
    assert weights(out, "pool", ".parquet")
    assert node_cached(cluster, "dre")  # the ratio net, read by the pool's actors on their node
    print(f"dre + subsampling pool + view + cGAN-KD student on the cluster in {time.time() - t0:.0f} s")

"""Autoscaling: a run that asks for more CPUs than the cluster has gets them from Ray's autoscaler.

The head has no CPU; Ray's fake multi-node provider (FakeMultiNodeProvider: worker nodes are raylets on this
machine, launched and terminated by the head's autoscaler monitor) may add up to two 1-CPU nodes. A teacher
run with 2 Train workers x 1 CPU must make the autoscaler add nodes, complete, and leave idle nodes that the
autoscaler removes again within a short idle timeout.

The head is started here with `ray start --head` and not with `ray.cluster_utils.AutoscalingCluster`, whose
start() and shutdown() run `ray stop --force` (every Ray instance on the machine). It has its own temp dir
(the worker nodes take the head's), ports, and auth token, and teardown stops only the processes whose
command line names that temp dir, and their children (Ray renames its agents' and workers' command lines).
The pip wheel lacks fake_multi_node/example.yaml, which provider type `fake_multinode` reads for its
defaults, so the same provider class is loaded as an `external` provider.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_head import free_port, processes_of, stop_processes_under

from rayflow.watchdog import _cmdline

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
IDLE_MINUTES = 0.1
# Alive nodes in the cluster's GCS node table, printed as "<count>" every half second; run in a process of
# its own, so that the pytest process (which may hold an embedded Ray, `ray_session`) never talks to this one.
POLL = """
import sys, time
from ray._private.state import GlobalState
from ray._raylet import GcsClientOptions
s = GlobalState()
s._initialize_global_state(GcsClientOptions.create(sys.argv[1], None, allow_cluster_id_nil=True,
                                                   fetch_cluster_id_if_nil=False))
while True:
    print(sum(1 for n in s.node_table() if n["Alive"]), flush=True)
    time.sleep(0.5)
"""


def config(gcs: str) -> dict:
    empty = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
             "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude",
             "rsync_filter")
    return {"cluster_name": "rfa", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": IDLE_MINUTES,
            "provider": {"type": "external", "module": PROVIDER, "gcs_address": gcs, "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "head_node_type": "ray.head.default",
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "ray.worker.cpu": {"resources": {"CPU": 1, "object_store_memory": 200 * 2**20}, "node_config": {},
                                   "min_workers": 0, "max_workers": 2}},
            "auth": {}, "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
            **{k: [] for k in empty}}


@pytest.fixture
def head():
    """A head without CPUs and with the fake autoscaler: (GCS address, env for its clients, temp dir)."""
    import ray._private.services

    tmp = tempfile.mkdtemp(prefix="rfa-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ip, port = ray._private.services.get_node_ip_address(), free_port()
    gcs = f"{ip}:{port}"
    Path(tmp, "autoscaling.json").write_text(json.dumps(config(gcs)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(PATH=f"{BIN}:{env['PATH']}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    args = [str(BIN / "ray"), "start", "--head", f"--node-ip-address={ip}", f"--port={port}", f"--temp-dir={tmp}",
            "--num-cpus=0", f"--object-store-memory={200 * 2**20}", "--disable-usage-stats",
            f"--autoscaling-config={tmp}/autoscaling.json", "--include-dashboard=false",
            f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}"]
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=120,
                           env={**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        assert p.returncode == 0, p.stdout + p.stderr
        yield gcs, env, tmp
    finally:
        stop_processes_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def counts(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()]


@pytest.mark.timeout(480)
def test_autoscaler_adds_nodes_for_a_run_and_removes_them_when_idle(head, tmp_path):
    gcs, env, tmp = head
    out, poll_log, run_log = tmp_path / "out", tmp_path / "nodes.log", tmp_path / "run.log"
    poll_err = tmp_path / "nodes.err"
    cmd = [sys.executable, "-m", "rayflow", "stage", "teacher", "--config", "tiny"] + [
        a for s in (f"output_dir={out}", f"runtime.address={gcs}", "scaling.num_workers=2",
                    "scaling.cpus_per_worker=1", "teacher.train.steps=60") for a in ("--set", s)]
    with open(poll_log, "w") as pl, open(poll_err, "w") as pe, open(run_log, "w") as rl:
        poller = subprocess.Popen([sys.executable, "-c", POLL, gcs], stdout=pl, stderr=pe, env=env)
        run = subprocess.Popen(cmd, stdout=rl, stderr=subprocess.STDOUT, env=env)
    try:
        t0 = time.time()
        code = run.wait(timeout=240)
        seconds = time.time() - t0
        grown = counts(poll_log)
        assert code == 0, run_log.read_text()[-5000:]
        assert list(out.glob("artifacts/teacher/teacher-*/**/model.safetensors")), sorted(map(str, out.rglob("*")))
        assert max(grown, default=0) > 1, f"no node added: alive-node counts {grown} {poll_err.read_text()[-2000:]}"
        # the run's placement group is gone: the added nodes are idle, and the autoscaler removes them
        deadline = time.time() + IDLE_MINUTES * 60 + 60
        while time.time() < deadline and counts(poll_log)[-1:] != [1]:
            time.sleep(1)
        assert counts(poll_log)[-1:] == [1], f"idle nodes not removed: alive-node counts {counts(poll_log)[-20:]}"
        monitor = Path(tmp, "session_latest", "logs", "monitor.log").read_text()
        removed = re.findall(r"Terminating the node with id (\w+) .*\(idle\)", monitor)
        assert len(set(removed)) == max(grown) - 1, monitor[-3000:]  # by the autoscaler, as idle: not crashed
        print(f"run {seconds:.0f} s with up to {max(grown)} nodes; back to the head alone "
              f"{time.time() - t0 - seconds:.0f} s later")
    finally:
        for p in (run, poller):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    stop_processes_under(tmp)
    assert not processes_of(tmp), {p: _cmdline(p)[:200] for p in processes_of(tmp)}

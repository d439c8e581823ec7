"""The Ray dashboard accepts job submissions (it runs code): an embedded Ray keeps it off or on
127.0.0.1 unless configured, and every cluster file that opens it to the network says it needs
Ray's token auth right beside it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rayflow.config import RuntimeConfig, load_config
from rayflow.runtime import embedded_init_kwargs

ROOT = Path(__file__).resolve().parents[1]
OPEN = re.compile(r"dashboard[-_]host[=:]\s*['\"]?0\.0\.0\.0")


def test_embedded_ray_binds_the_dashboard_to_localhost_by_default():
    kw = embedded_init_kwargs(RuntimeConfig())
    assert kw["include_dashboard"] is False and kw["dashboard_host"] == "127.0.0.1"
    on = embedded_init_kwargs(RuntimeConfig(dashboard=True))
    assert on["include_dashboard"] is True and on["dashboard_host"] == "127.0.0.1"
    assert embedded_init_kwargs(RuntimeConfig(dashboard=True, dashboard_host="0.0.0.0"))["dashboard_host"] == "0.0.0.0"


def test_no_packaged_config_opens_the_dashboard():
    for f in sorted((ROOT / "rayflow" / "configs").glob("*.yaml")):
        rt = load_config(str(f)).runtime
        assert rt.dashboard_host in ("127.0.0.1", "localhost"), f.name


def _cluster_files() -> list[Path]:
    files = [ROOT / "cluster.yaml", ROOT / "README.md", ROOT / "Makefile"]
    files += sorted((ROOT / "deploy").rglob("*.yaml")) + sorted((ROOT / "jobs").glob("*"))
    return [f for f in files if f.is_file()]


def test_cluster_files_open_the_dashboard_only_beside_a_token_note():
    opened = []
    for f in _cluster_files():
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            if OPEN.search(line):
                opened.append(f.name)
                near = " ".join(lines[max(0, i - 8):i + 1]).lower()
                assert "token" in near, f"{f.name}:{i + 1} opens the dashboard without a token note"
    assert "cluster.yaml" in opened  # the check looked at something


def test_cluster_yaml_runs_every_node_in_token_mode():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    opens = any(OPEN.search(c) for c in cfg["head_start_ray_commands"])
    assert not opens or "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]


def test_kuberay_manifests_that_open_the_dashboard_turn_token_auth_on():
    for f in sorted((ROOT / "deploy" / "kuberay").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            spec = doc.get("spec", {})
            cluster = spec.get("rayClusterSpec", spec)
            host = cluster.get("headGroupSpec", {}).get("rayStartParams", {}).get("dashboard-host")
            if host == "0.0.0.0":
                assert cluster.get("authOptions", {}).get("mode") == "token", f.name


def test_an_embedded_ray_runs_train_without_the_preemption_watcher_and_polls_fast():
    """One machine has no node drains to watch: an embedded instance turns Train's preemption watcher off
    and polls its workers every 0.25 s (a user's own setting wins; a cluster keeps Ray's defaults). The
    names are Ray's own: renamed there, this setting would silently do nothing."""
    from ray.train.v2._internal import constants

    from rayflow.runtime import ONE_MACHINE_TRAIN_ENV, one_machine_train_env

    assert one_machine_train_env({}) == ONE_MACHINE_TRAIN_ENV
    assert one_machine_train_env({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}) == {
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    # rayflow's own cluster default (0.5 s), set a moment earlier by init_ray, gives way; a user's does not
    ours = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    assert one_machine_train_env(ours, ours=ours) == ONE_MACHINE_TRAIN_ENV
    assert {constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR, constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR} == \
        set(ONE_MACHINE_TRAIN_ENV) <= constants.ENV_VARS_TO_PROPAGATE  # reach the controller from the driver

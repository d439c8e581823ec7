"""The GPU code paths, checked on a CPU-only machine: which device each executor picks, which
resources Train workers and synth actors ask Ray for, and where AMP turns on. Nothing here starts
Ray or needs CUDA: the objects are built and inspected, `torch.cuda.is_available` is patched."""

from __future__ import annotations

import contextlib

import pytest
import torch

from rayflow.config import ConfigError, ScalingConfig, SynthConfig, TrainConfig, load_config
from rayflow.executors import LocalExecutor, PoolError, PoolSpec, StepSpec, check_gpu_request

TINY = "rayflow/configs/tiny.yaml"


@pytest.fixture
def cuda(monkeypatch):
    """`cuda(True)`: this process believes it has a GPU."""
    def set_(on: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: on)
    return set_


# -- Train workers -------------------------------------------------------------------------------

def test_ray_train_workers_ask_for_one_gpu_each_with_use_gpu():
    from rayflow.executors.ray_train import scaling_config

    sc = scaling_config(ScalingConfig(num_workers=2, use_gpu=True, cpus_per_worker=3))
    assert sc.use_gpu and sc.num_gpus_per_worker == 1 and sc.num_cpus_per_worker == 3
    assert sc.total_resources == {"CPU": 6.0, "GPU": 2.0}
    cpu = scaling_config(ScalingConfig(num_workers=2))
    assert not cpu.use_gpu and cpu.num_gpus_per_worker == 0


@pytest.mark.parametrize("use_gpu,available,want", [(True, True, "cuda"), (True, False, "cpu"),
                                                    (False, True, "cpu")])
def test_local_executor_trains_on_cuda_only_when_asked_and_present(cuda, tmp_path, use_gpu, available, want):
    cuda(available)
    threads = torch.get_num_threads()
    try:
        res = LocalExecutor().fit(lambda ctx, cfg: ctx.device, {}, name="r", scaling=ScalingConfig(use_gpu=use_gpu),
                                  storage=(str(tmp_path), None))
    finally:
        torch.set_num_threads(threads)
    assert res.return_value.type == want


def test_embedded_ray_run_asking_for_gpus_without_one_fails_before_compute(cuda):
    cuda(False)
    for over in (["scaling.use_gpu=true"], ["synth.num_gpus_per_actor=0.5"]):
        with pytest.raises(ConfigError, match=over[0].split("=")[0]):
            check_gpu_request(load_config(TINY, over))
    check_gpu_request(load_config(TINY, ["scaling.use_gpu=true", "runtime.executor=local"]))  # falls back to cpu
    check_gpu_request(load_config(TINY, ["scaling.use_gpu=true", "runtime.address=10.0.0.1:6379"]))  # a cluster
    cuda(True)
    check_gpu_request(load_config(TINY, ["scaling.use_gpu=true"]))


def test_the_runner_checks_gpus_at_its_first_build_not_before(cuda, tmp_path):
    from rayflow.stages.graph import Node
    from rayflow.stages.runner import Runner

    cuda(False)
    runner = Runner(load_config(TINY, ["scaling.use_gpu=true", f"output_dir={tmp_path}"]))  # `rayflow graph` works
    with pytest.raises(ConfigError, match="scaling.use_gpu"):
        runner.artifact(Node.of("teacher"))


# -- AMP -----------------------------------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, device_type, dtype=None, enabled=True):
        self.calls.append((device_type, dtype, enabled))
        return contextlib.nullcontext()


@pytest.mark.parametrize("amp,device,enabled", [(True, "cuda", True), (True, "cpu", False), (False, "cuda", False)])
def test_autocast_is_bf16_on_cuda_only(monkeypatch, amp, device, enabled):
    from rayflow.train import loop

    rec = _Recorder()
    monkeypatch.setattr(loop.torch, "autocast", rec)
    loop.autocast(TrainConfig(amp=amp), torch.device(device))
    assert rec.calls == [(device, torch.bfloat16, enabled)]


def test_the_step_loop_uses_that_autocast(monkeypatch):
    from rayflow.train import loop
    from rayflow.train.sources import Batch
    from rayflow.train.tasks import Task

    class Source:
        def next_batch(self):
            return Batch({"x": torch.randn(4, 3), "y": torch.randint(0, 2, (4,))})

    rec = _Recorder()
    monkeypatch.setattr(loop.torch, "autocast", rec)
    cfg = TrainConfig(steps=2, batch_size=4, amp=True, augment=[])
    loop.train_steps(torch.nn.Linear(3, 2), Source(), cfg, Task.of(2), device="cpu")
    assert rec.calls == [("cpu", torch.bfloat16, False)] * 2


# -- synth actors --------------------------------------------------------------------------------

def test_synth_actors_request_gpus_and_the_driver_follows_the_machine(cuda):
    from rayflow.synth.driver import SynthOptions, driver_device, pool_spec

    pool = pool_spec(SynthConfig(num_gpus_per_actor=0.5), SynthOptions(gen_actors=3))
    assert pool.gpus_per_actor == 0.5 and pool.max_actors == 3
    assert pool_spec(SynthConfig(), SynthOptions()).gpus_per_actor == 0
    cuda(False)
    assert driver_device(SynthConfig(num_gpus_per_actor=1)) == "cpu"
    cuda(True)
    assert driver_device(SynthConfig(num_gpus_per_actor=1)) == "cuda"
    assert driver_device(SynthConfig()) == "cpu"


def test_synth_steps_build_their_nets_on_the_device_they_are_given():
    from rayflow.synth.driver import _chain
    from rayflow.synth.udfs import _device

    kw = {"generate": {"a": 1}, "score": None, "label": {"b": 2}, "write": {"out_dir": None}}
    for fused in (True, False):
        specs = _chain(kw, fused)("cuda", 2)
        steps = [(s.cls, s.kwargs) for s in specs[:-1]] + specs[-1].kwargs["steps"]  # the last one writes
        assert [k["device"] for _, k in steps] == ["cuda", "cuda"]
    assert _device("cuda").type == "cuda" and _device("cpu").type == "cpu"


class _FakeDataset:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def map_batches(self, cls, **kw):
        self.calls.append(kw)
        return self

    def iter_rows(self):
        return iter([])


def test_ray_data_actors_get_num_gpus_and_a_cuda_chain(monkeypatch):
    import ray

    from rayflow.executors import ray_data

    ds, seen = _FakeDataset(), []
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    monkeypatch.setattr(ray.data, "from_items", lambda items, **kw: ds)

    def steps(device, threads):
        seen.append(device)
        return [StepSpec(object, {})]

    list(ray_data.ray_map_batches([{"i": 0}], steps, PoolSpec(max_actors=4, cpus_per_actor=1, gpus_per_actor=1)))
    assert seen == ["cuda"] and ds.calls[0]["num_gpus"] == 1 and ds.calls[0]["num_cpus"] == 1
    assert ds.calls[0]["compute"].min_size == 2  # two GPUs: two actors at once
    seen.clear()
    list(ray_data.ray_map_batches([{"i": 0}], steps, PoolSpec(cpus_per_actor=1)))
    assert seen == ["cpu"] and ds.calls[1]["num_gpus"] == 0


def test_gpu_actors_on_a_cluster_without_gpus_are_refused_up_front(monkeypatch):
    import ray

    from rayflow.executors.ray_data import min_actors

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    with pytest.raises(PoolError, match="num_gpus_per_actor"):
        min_actors(PoolSpec(gpus_per_actor=1), 1)


def test_local_map_batches_runs_the_chain_on_cuda_only_with_gpu_actors(cuda):
    seen = []

    def steps(device, threads):
        seen.append(device)
        return []

    cuda(True)
    list(LocalExecutor().map_batches([], steps, PoolSpec(gpus_per_actor=1)))
    list(LocalExecutor().map_batches([], steps, PoolSpec()))
    cuda(False)
    list(LocalExecutor().map_batches([], steps, PoolSpec(gpus_per_actor=1)))
    assert seen == ["cuda", "cpu", "cpu"]


def test_gpu_actors_wait_for_scaled_down_gpu_nodes_of_an_autoscaling_cluster(monkeypatch):
    """The autoscaler's config allows GPU nodes (none up now): one actor per pool is asked for (the
    request that scales a GPU node up), not refused; more than the config can ever give still is."""
    import ray
    from ray._private import state as ray_state

    from rayflow.executors.ray_data import min_actors

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(ray_state.state, "get_max_resources_from_cluster_config", lambda: {"CPU": 20, "GPU": 2})
    assert min_actors(PoolSpec(max_actors=4, gpus_per_actor=1), 1) == 1
    with pytest.raises(PoolError, match=r"has 2 \(scaled up\); lower synth.num_gpus_per_actor"):
        min_actors(PoolSpec(gpus_per_actor=1), 3)
    monkeypatch.setattr(ray_state.state, "get_max_resources_from_cluster_config", lambda: None)  # no autoscaler
    with pytest.raises(PoolError, match="has 0; lower synth.num_gpus_per_actor"):
        min_actors(PoolSpec(gpus_per_actor=1), 1)

"""Shared fixtures. Ray starts at most once per test session, and only for tests that ask for it."""

import os

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from rayflow.config import RuntimeConfig
    from rayflow.runtime import init_ray

    init_ray(RuntimeConfig(address="local", num_cpus=2, object_store_memory_mb=512))
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = 120
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from rayflow.config import DataConfig
    from rayflow.data import load_splits

    return load_splits(DataConfig(name="digits", image_size=16))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: one torch thread is as fast, and does not suffer from a busy shared machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)

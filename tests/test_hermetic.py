"""Embedded Ray leaves the user's home alone, whatever it holds.

Ray's local `ray.init()` turns token auth on and, lacking a token, writes ~/.ray/auth_token; that file
then switched every later `ray start --head` on the machine to token mode, and a job submitted to a
head started before it failed (the suite passed only where an earlier run had left the file). rayflow's
embedded instance carries a token of its own in its processes' environment instead (runtime.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = """
import os, ray
from rayflow.config import RuntimeConfig
from rayflow.runtime import init_ray
init_ray(RuntimeConfig(num_cpus=1, object_store_memory_mb=128))
mode = ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_MODE")).remote())
ray.shutdown()
init_ray(RuntimeConfig(num_cpus=1, object_store_memory_mb=128))  # a second instance (rayflow tune does this)
assert ray.get(ray.remote(lambda: 1).remote()) == 1
print("workers:", mode, "driver:", sorted(k for k in os.environ if k.startswith("RAY_AUTH_")))
ray.shutdown()
"""


def _files(home) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), home): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(home) for f in fs}


@pytest.mark.parametrize("stale_token", [False, True], ids=["empty-home", "stale-token-in-home"])
def test_embedded_ray_writes_nothing_into_home_and_ignores_a_stale_token(tmp_path, stale_token):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if stale_token:
        (home / ".ray" / "auth_token").write_text("a-stale-token-of-another-cluster")
    before = _files(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_") and k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180,
                       env={**env, "HOME": str(home)})
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    # token auth is on in the cluster, with a token of its own; the driver's environment is as it was
    assert "workers: token driver: []" in p.stdout, p.stdout
    assert _files(home) == before

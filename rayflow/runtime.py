"""Starting Ray (embedded, or the cluster in RAY_ADDRESS) in one place, quietly and safely.

`executor: local` never imports Ray, so the same stages run on machines that only have torch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import warnings

from rayflow.config import RuntimeConfig
from rayflow.ray_quiet import (_NO_CPU_WARNING, _PROGRESS_LOGGER, _TRAIN_REQUEST_WARNING,  # noqa: F401
                               _drop_message, _one_line_for_ray_monitors, quiet_ray_process)
from rayflow.ray_env import (_RAY_ENV_DEFAULTS, ONE_MACHINE_TRAIN_ENV, one_machine_train_env,  # noqa: F401
                             set_ray_env_defaults)

log = logging.getLogger("rayflow")

def started_here() -> bool:
    """Whether this process is connected to the embedded Ray `init_ray` started in it: one machine,
    which ends with this driver (no cluster outlives it)."""
    import ray

    return ray.is_initialized() and _STARTED.get("gcs") == ray.get_runtime_context().gcs_address


def embedded(rt: RuntimeConfig) -> bool:
    """Whether `init_ray` starts Ray in this process (no runtime.address, no RAY_ADDRESS)."""
    return not (rt.address or os.environ.get("RAY_ADDRESS"))


def init_ray(rt: RuntimeConfig | None = None) -> None:
    """Embedded Ray unless RAY_ADDRESS / runtime.address names a cluster; no-op if already up."""
    rt = rt or RuntimeConfig()
    added = set_ray_env_defaults()
    import ray

    if ray.is_initialized():
        from rayflow.user_code import shipped

        if shipped():  # the runtime_env is fixed by whoever started Ray: workers must find the code themselves
            log.debug("Ray was already running: %s reach its workers only where they are importable",
                      ", ".join(shipped()))
        return
    from rayflow.interrupt import install_handlers

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\..*")
    address = "local" if embedded(rt) else rt.address or os.environ["RAY_ADDRESS"]
    # Worker output reaches the driver (training progress); Ray's own chatter is cut to errors.
    level = "ERROR" if rt.quiet else "INFO"
    common = dict(log_to_driver=True, logging_level=level,
                  logging_config=ray.LoggingConfig(encoding="TEXT", log_level=level))
    # The package must be importable by workers; an editable install is, a source checkout may not be.
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Only variables rayflow itself chose: a job's runtime_env may already set others, and Ray
    # refuses a driver runtime_env that names the same keys as the job's.
    env: dict = {"env_vars": added} if added else {}
    _add_py_modules(env, ([] if _installed() else [os.path.join(pkg_root, "rayflow")]))
    _quiet_workers(env, rt.quiet)
    if address == "local":
        log.info("starting embedded Ray (num_cpus=%s)", rt.num_cpus or os.cpu_count())
        # before ray.init (its processes inherit them); they override rayflow's cluster defaults (a
        # user's own setting still wins)
        one = one_machine_train_env(os.environ, ours=added)
        os.environ.update(one)
        if one:
            env["env_vars"] = {**env.get("env_vars", {}), **one}
        from rayflow import watchdog

        if _WATCHDOG.get("proc") is None or _WATCHDOG["proc"].poll() is not None:
            _WATCHDOG["proc"] = watchdog.start()
        with _own_ports_and_address(), _own_auth_token():
            ray.init(address="local", runtime_env=env, **embedded_init_kwargs(rt), **common)
        _STARTED["gcs"] = ray.get_runtime_context().gcs_address
        install_handlers()  # ray.init replaced the SIGTERM handler with its own sys.exit
    else:
        log.info("connecting to Ray at %s", address)
        gcs = _gcs_address(address)
        if gcs and "RAY_ADDRESS" not in _job_env_vars():
            # the cluster's own helpers (Train's placement-group cleaner) otherwise look the cluster
            # up by themselves and fail on a machine that runs several Ray instances
            env = {**env, "env_vars": {**env.get("env_vars", {}), "RAY_ADDRESS": gcs}}
        ray.init(address=address, runtime_env=env, **common)
        install_handlers()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = 600  # fail a stuck pipeline in minutes, not 30
    if hasattr(ctx, "use_datasource_v2"):
        # Ray 2.60's V2 Parquet reader lists files in one task at ~0.2 s per file here: a 75-shard
        # fake set took 16 s to read (V1: 0.75 s), in front of every student's training run.
        ctx.use_datasource_v2 = False
    if rt.quiet:
        quiet_ray_data()


_WATCHDOG: dict = {}
_STARTED: dict = {}  # "gcs": the address of the embedded instance init_ray started in this process


def _add_py_modules(env: dict, paths: list[str]) -> None:
    """rayflow's source (when not installed) and the user's code the config names (a teacher's or a
    student's factory, rayflow.user_code) as the workers' py_modules. A job submitted with its own
    py_modules keeps them (Ray refuses a driver runtime_env that sets the same key): the user's code
    must then be among them, or in the job's working_dir."""
    from rayflow.user_code import shipped

    paths = [*paths, *shipped()]
    if not paths:
        return
    job_env = _job_runtime_env()
    if "py_modules" in job_env:
        log.warning("the job's runtime_env sets py_modules: %s must be importable through it or the job's "
                    "working_dir", ", ".join(paths))
        return
    env["py_modules"] = paths


def embedded_init_kwargs(rt: RuntimeConfig) -> dict:
    """ray.init arguments of an embedded instance that come from the config. The dashboard is off
    unless `runtime.dashboard`, and binds to `runtime.dashboard_host` (127.0.0.1 by default): Ray's
    dashboard accepts job submissions, so on 0.0.0.0 anyone on the network could run code here."""
    return dict(num_cpus=rt.num_cpus, object_store_memory=rt.object_store_memory_mb * 2**20,
                include_dashboard=rt.dashboard, dashboard_host=rt.dashboard_host)


@contextlib.contextmanager
def _own_ports_and_address():
    """An embedded instance on free ports that tells its own processes where it is.

    Why: Ray's defaults gave every embedded run the dashboard agent's fixed port 52365, so a
    `ray start --head` on the same machine had no agent ("No available agent" on job submission);
    and Ray's helpers that look a cluster up by themselves (Train's placement-group cleaner) found
    several instances, or a stale `ray start` one, and printed tracebacks. The GCS port is chosen
    here, and RAY_ADDRESS naming it is in the environment the raylet, and through it every worker,
    inherits; the driver's own environment is restored afterwards (a later subprocess must not
    mistake a finished embedded instance for a cluster).
    """
    from ray._private import parameter, services

    init = parameter.RayParams.__init__
    saved_defaults, saved_env = init.__defaults__, os.environ.get("RAY_ADDRESS")
    try:
        names = init.__code__.co_varnames[1:init.__code__.co_argcount]
        defaults = list(init.__defaults__)
        first = len(names) - len(defaults)
        port = _free_port()
        defaults[names.index("gcs_server_port") - first] = port
        defaults[names.index("dashboard_agent_listen_port") - first] = 0
        init.__defaults__ = tuple(defaults)
        os.environ["RAY_ADDRESS"] = f"{services.get_node_ip_address()}:{port}"
    except (ValueError, AttributeError, TypeError):  # another Ray layout: its defaults, no address
        init.__defaults__ = saved_defaults
    try:
        yield
    finally:
        init.__defaults__ = saved_defaults
        if saved_env is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved_env


_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@functools.cache
def _process_token() -> str:
    """One token per process: Ray's loader caches the first it reads, and a second embedded instance
    (after `rayflow tune` shuts Tune's down) with another token refused the driver's connection."""
    import secrets

    return secrets.token_hex(32)


@contextlib.contextmanager
def _own_auth_token():
    """An embedded instance with token auth and a token of its own that lives only in its processes.

    Why: a local `ray.init()` turns token auth on and, lacking a token, writes one to
    ~/.ray/auth_token. That file then silently switches every later `ray start --head` on the machine
    to token mode (and a job submitted to a head started before it fails without it): state in the
    user's home that neither run asked for. A random token in RAY_AUTH_TOKEN (which Ray reads before
    any file) reaches the raylet and, through it, every worker; the driver caches it at connect, and
    its own environment is restored afterwards so a later subprocess (a `ray start`, a job CLI) sees
    the user's settings only. A user who set any RAY_AUTH_* variable keeps Ray's own behaviour.
    """
    if any(v in os.environ for v in _AUTH_VARS):
        yield
        return
    # the mode stays unset: ray.init's own default turns token mode on (and refreshes its config)
    os.environ["RAY_AUTH_TOKEN"] = _process_token()
    try:
        yield
    finally:
        for v in _AUTH_VARS:
            os.environ.pop(v, None)


def _gcs_address(address: str) -> str | None:
    """host:port of the GCS `address` names (None for a Ray Client `ray://` address or if unknown)."""
    if address.startswith("ray://"):
        return None
    try:
        from ray._private import services

        return services.canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - ray.init reports an unusable address better
        return None


def _job_runtime_env() -> dict:
    """The runtime_env a `ray job submit` gave this driver ({} outside a job)."""
    import json

    try:
        return json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _job_env_vars() -> dict:
    """env_vars of the runtime_env a `ray job submit` gave this driver (Ray refuses to see them twice)."""
    return _job_runtime_env().get("env_vars", {}) or {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# Ray Data's own logger, in the processes init_ray does not run in: its split coordinators (which
# run the fake-set reads that feed Train workers, one line "Dataset ... execution finished" each)
# and its actors. Read by ray.data when it is imported, so no process pays for importing it early.
_QUIET_WORKER_ENV = {"RAY_DATA_LOG_LEVEL": "WARNING", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
QUIET_ENV = "RAYFLOW_QUIET_RAY"  # "0" in the workers of a `rayflow -v` run: Ray's chatter stays


def _quiet_workers(env: dict, quiet: bool) -> None:
    """Adds to the job's runtime_env what quiets Ray in every worker process (env vars the user has
    not set, and `quiet_ray_process` as the worker setup hook), or, with quiet off, tells the
    workers so."""
    chosen = {k: v for k, v in ({**_QUIET_WORKER_ENV, QUIET_ENV: "1"} if quiet else {QUIET_ENV: "0"}).items()
              if k not in os.environ}
    if chosen:
        env["env_vars"] = {**env.get("env_vars", {}), **chosen}
    from ray._private import ray_constants

    hook_var = getattr(ray_constants, "WORKER_PROCESS_SETUP_HOOK_ENV_VAR", None)
    # a job submitted with its own setup hook keeps it (Ray refuses two)
    if quiet and hook_var and hook_var not in os.environ and \
            "worker_process_setup_hook" not in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", ""):
        env["worker_process_setup_hook"] = "rayflow.ray_quiet.quiet_ray_process"


def quiet_ray_data() -> None:
    """Ray Data logs every execution at INFO and draws progress bars; training and synth progress
    lines are what users want. Per process: the driver calls it from init_ray, Train workers too."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per execution otherwise
    logging.getLogger(_PROGRESS_LOGGER).setLevel(logging.ERROR)  # says the bars are off, once
    _drop_message(*_NO_CPU_WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False


def quiet_train_reports() -> None:
    """Train V2 logs every ``ray.train.report`` at INFO with its whole metrics dict (our GAN
    metrics carry the training curve, so the line grows with every checkpoint) under a logger
    named by file path, which ``LoggingConfig(log_level=...)`` does not reach."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def quiet_ray_worker() -> None:
    """Ray Data and Train V2 noise off in a Train worker (its own process, own DataContext), unless
    the run is verbose (`rayflow -v`)."""
    import warnings

    if os.environ.get(QUIET_ENV) == "0":
        return
    quiet_ray_data()
    quiet_train_reports()
    warnings.filterwarnings("ignore", module=r"ray\..*")


def _installed() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("rayflow")
        return True
    except PackageNotFoundError:
        return False


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1))

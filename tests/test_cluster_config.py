"""The cluster configs are ones the tools would accept, and agree with each other.

- cluster.yaml goes through what `ray up` runs before it touches a cloud (Ray's own prepare_config +
  validate_config: the JSON schema shipped in the Ray wheel plus its cross-field checks), and, under
  moto, through the AWS provider's resource autodetection and bootstrap (IAM, key pair, subnets,
  security group, AMI).
- deploy/kuberay/*.yaml: no KubeRay CRD schema ships offline, so the structure that matters is checked
  here (API version and kinds, autoscaler on, every group's container resources equal to its
  rayStartParams, replica bounds, the job's entrypoint parsed by rayflow's own CLI and config).
  With RAYFLOW_KUBERAY_CRDS=<kuberay>/ray-operator/config/crd/bases they are also validated against
  the CRDs' OpenAPI schemas.
- One Ray version and one install everywhere: cluster.yaml, deploy/Dockerfile, the manifests, the Ray
  running these tests.
Every check has a negative case: a broken copy must fail. Parsing only; no Ray starts.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
RAYCLUSTER_YAML = ROOT / "deploy" / "kuberay" / "raycluster.yaml"
RAYJOB_YAML = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
RUNTIME_ENV_YAML = ROOT / "jobs" / "runtime_env.yaml"
GPU = "nvidia.com/gpu"


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture
def cluster() -> dict:
    return load(CLUSTER_YAML)


@pytest.fixture
def kuberay() -> tuple[dict, dict]:
    return load(RAYCLUSTER_YAML), load(RAYJOB_YAML)


def ray_version_of_cluster_yaml() -> tuple[str, str]:
    """(Ray version, Python tag) from cluster.yaml's image, e.g. ('2.60.0', 'py311')."""
    image = load(CLUSTER_YAML)["docker"]["image"]
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-(py3\d+)", image)
    assert m, f"cluster.yaml docker.image {image!r} is not rayproject/ray:<version>-py3<minor>"
    return m.group(1), m.group(2)


# ---------------------------------------------------------------- cluster launcher (cluster.yaml)

def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def launcher_validate(cfg: dict) -> dict:
    """`ray up`'s own checks, short of the cloud: defaults merged, setup commands merged, docker
    checked, per-type worker limits filled, then the shipped JSON schema and the cross-field rules
    (head_node_type among the node types, sum of min_workers <= max_workers). Falls back to the bare
    schema if Ray's private helpers ever move."""
    cfg = copy.deepcopy(cfg)
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # pragma: no cover - depends on the Ray build
        jsonschema.validate(cfg, ray_schema())
        return cfg
    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def setup_install_command(cfg: dict) -> str:
    cmds = [c for c in cfg.get("setup_commands", []) if "pip install" in c and "constraints" in c]
    assert len(cmds) == 1, f"expected one `pip install -c constraints.txt ...` setup command, got {cmds}"
    return cmds[0]


def check_cluster(cfg: dict) -> list[str]:
    """What the schema cannot say: the shape this project needs."""
    problems = []
    types = cfg.get("available_node_types", {})
    head = types.get(cfg.get("head_node_type"), {})
    if not head.get("resources", {}).get("CPU", 0) > 0:
        problems.append("head advertises no CPU: the driver's small Ray tasks would wait for a worker")
    workers = {k: v for k, v in types.items() if k != cfg.get("head_node_type")}
    if not any(v.get("resources", {}).get("GPU", 0) > 0 for v in workers.values()):
        problems.append("no GPU worker type")
    if not any(v.get("resources", {}).get("GPU", 0) == 0 for v in workers.values()):
        problems.append("no CPU-only worker type")
    for name, t in workers.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers")
        if hi is None or not 0 <= lo <= hi or hi < 1:
            problems.append(f"{name}: want 0 <= min_workers <= max_workers >= 1, got {lo}..{hi}")
    if not cfg.get("idle_timeout_minutes", 0) > 0:
        problems.append("idle_timeout_minutes must be > 0 (workers scale back down)")
    mounts = cfg.get("file_mounts", {})
    env = dict(o.split(None, 1)[1].split("=", 1) for o in cfg.get("docker", {}).get("run_options", [])
               if o.startswith("--env "))
    if env.get("RAY_AUTH_MODE") == "token":
        remote = {r.replace("~", "/home/ray", 1) for r in mounts}
        if env.get("RAY_AUTH_TOKEN_PATH") not in remote:
            problems.append(f"token auth on, but RAY_AUTH_TOKEN_PATH={env.get('RAY_AUTH_TOKEN_PATH')} "
                            "is not a file mount: nodes would have no token")
    local_repo = [r for r, local in mounts.items() if (ROOT / local).resolve() == ROOT]
    if not local_repo:
        problems.append("file_mounts does not ship the checkout ('.': the repo root)")
    else:
        cmd = setup_install_command(cfg)
        if f"cd {local_repo[0]} " not in cmd:
            problems.append(f"the install does not run in the mounted checkout {local_repo[0]}: {cmd}")
    return problems


def test_cluster_yaml_passes_rays_validator(cluster):
    prepared = launcher_validate(cluster)
    assert prepared["provider"]["type"] == "aws"
    # prepare_config merged setup_commands into the head's and workers': the install runs everywhere.
    install = setup_install_command(cluster)
    assert install in prepared["head_setup_commands"] and install in prepared["worker_setup_commands"]
    assert check_cluster(cluster) == []


def test_cluster_yaml_is_schema_valid_as_written(cluster):
    """Before any defaults are merged in (the fallback path, and stricter on what the file says:
    prepare_config would fill a missing cluster_name with "default")."""
    jsonschema.validate(cluster, ray_schema())
    for key in ("cluster_name", "provider"):
        broken = {k: v for k, v in cluster.items() if k != key}
        with pytest.raises(jsonschema.ValidationError, match=key):
            jsonschema.validate(broken, ray_schema())


@pytest.mark.parametrize("path", [
    ("provider",), ("provider", "type"), ("head_node_type",),
    ("available_node_types", "gpu_worker", "resources"), ("available_node_types", "head", "node_config"),
])
def test_cluster_yaml_missing_required_key_fails(cluster, path):
    broken = copy.deepcopy(cluster)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError, AssertionError)):
        launcher_validate(broken)


def test_cluster_yaml_bad_values_fail(cluster):
    typo = copy.deepcopy(cluster)
    typo["idle_timeout_minute"] = typo.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError):
        launcher_validate(typo)
    too_many = copy.deepcopy(cluster)
    too_many["available_node_types"]["gpu_worker"]["min_workers"] = cluster["max_workers"] + 1
    with pytest.raises(ValueError, match="min_workers"):
        launcher_validate(too_many)
    fractional = copy.deepcopy(cluster)
    fractional["available_node_types"]["head"]["resources"]["CPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        launcher_validate(fractional)


def test_cluster_checks_catch_broken_shapes(cluster):
    no_head_cpu = copy.deepcopy(cluster)
    no_head_cpu["available_node_types"]["head"]["resources"] = {"CPU": 0}
    assert any("head advertises no CPU" in p for p in check_cluster(no_head_cpu))
    inverted = copy.deepcopy(cluster)
    inverted["available_node_types"]["cpu_worker"].update(min_workers=3, max_workers=2)
    assert any("cpu_worker" in p for p in check_cluster(inverted))
    no_gpu = copy.deepcopy(cluster)
    del no_gpu["available_node_types"]["gpu_worker"]
    assert "no GPU worker type" in check_cluster(no_gpu)
    no_code = copy.deepcopy(cluster)
    no_code["file_mounts"] = {}
    assert any("checkout" in p for p in check_cluster(no_code))
    assert any("RAY_AUTH_TOKEN_PATH" in p for p in check_cluster(no_code))


def test_cluster_yaml_bootstraps_against_the_aws_api(cluster, monkeypatch, tmp_path):
    """What `ray up` does next, against moto's AWS: node resources from the instance types, then the
    provider's bootstrap (IAM profile, key pair, subnets, security group, default AMI)."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the key pair's .pem lands in ~/.ssh
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", cluster["provider"]["region"])
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.aws import utils as aws_utils
    from ray.autoscaler._private.providers import _NODE_PROVIDERS

    def clear_caches():  # boto clients cached across calls must not outlive the mock
        aws_utils.resource_cache.cache_clear()
        aws_utils.client_cache.cache_clear()
        aws_config._get_subnets_or_die.cache_clear()

    prepared = launcher_validate(cluster)
    types = prepared["available_node_types"]
    clear_caches()
    try:
        with mock_aws():
            # An account where `ray up` ran before: the default instance profile exists (creating it
            # waits 2 x 15 s for IAM propagation). Workers name the same profile.
            iam = boto3.client("iam")
            iam.create_role(RoleName="ray-autoscaler-v1", AssumeRolePolicyDocument="{}")
            iam.create_instance_profile(InstanceProfileName="ray-autoscaler-v1")
            iam.add_role_to_instance_profile(InstanceProfileName="ray-autoscaler-v1", RoleName="ray-autoscaler-v1")
            ec2 = boto3.client("ec2")
            found = ec2.describe_instance_types(
                InstanceTypes=sorted({t["node_config"]["InstanceType"] for t in types.values()}))["InstanceTypes"]
            specs = {i["InstanceType"]: (i["VCpuInfo"]["DefaultVCpus"],
                                         sum(g["Count"] for g in i.get("GpuInfo", {}).get("Gpus", [])))
                     for i in found}
            provider = _NODE_PROVIDERS[prepared["provider"]["type"]](prepared["provider"])
            boot = provider.bootstrap_config(prepared)
    finally:
        clear_caches()

    head_type = prepared["head_node_type"]
    for name, t in types.items():
        vcpus, gpus = specs[t["node_config"]["InstanceType"]]
        cpu, gpu = t["resources"].get("CPU", 0), t["resources"].get("GPU", 0)
        assert gpu == gpus, f"{name}: GPU {gpu} but the instance has {gpus}"
        if name == head_type:  # headroom for the driver, which Ray does not account for
            assert 0 < cpu <= vcpus // 2, f"head: CPU {cpu} of {vcpus} vCPUs leaves the driver too little"
        else:
            assert cpu == vcpus, f"{name}: CPU {cpu} but the instance has {vcpus} vCPUs"
    profile = boot["head_node"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    for name, t in boot["available_node_types"].items():
        nc = t["node_config"]
        assert nc["ImageId"] and nc["SubnetIds"] and nc["SecurityGroupIds"] and nc["KeyName"], name
        if name != head_type:
            assert nc.get("IamInstanceProfile") == {"Name": profile}, f"{name}: no S3 access for output_dir"
    assert Path(boot["auth"]["ssh_private_key"]).is_file()


# ---------------------------------------------------------------- KubeRay (deploy/kuberay)

def quantity(q) -> float:
    """A Kubernetes CPU/GPU quantity: 8, "8", "500m"."""
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def check_group(where: str, group: dict, head: bool) -> list[str]:
    problems = []
    params = group.get("rayStartParams", {})
    for k, v in params.items():
        if not isinstance(v, str):
            problems.append(f"{where}: rayStartParams.{k} must be a string, got {v!r}")
    containers = group.get("template", {}).get("spec", {}).get("containers", [])
    if not containers:
        return problems + [f"{where}: no container"]
    res = containers[0].get("resources", {})
    limits, requests = res.get("limits", {}), res.get("requests", {})
    if {k: quantity(v) for k, v in limits.items() if k != "memory"} != \
            {k: quantity(v) for k, v in requests.items() if k != "memory"} or \
            limits.get("memory") != requests.get("memory"):
        problems.append(f"{where}: requests {requests} != limits {limits}")
    if "cpu" not in limits or "memory" not in limits:
        return problems + [f"{where}: container needs cpu and memory limits"]
    cpu, gpu = quantity(limits["cpu"]), quantity(limits.get(GPU, 0))
    num_cpus = float(params.get("num-cpus", cpu))
    num_gpus = float(params.get("num-gpus", gpu))
    if num_gpus != gpu:
        problems.append(f"{where}: rayStartParams num-gpus {num_gpus:g} != container {GPU} {gpu:g}")
    if head:
        if not 0 < num_cpus < cpu:
            problems.append(f"{where}: head num-cpus {num_cpus:g} must be > 0 and leave the driver part of "
                            f"its {cpu:g} CPUs")
    elif num_cpus != cpu:
        problems.append(f"{where}: rayStartParams num-cpus {num_cpus:g} != container cpu {cpu:g}")
    return problems


def group_image(group: dict) -> str:
    return group["template"]["spec"]["containers"][0]["image"]


def check_cluster_spec(where: str, spec: dict, ray_version: str, py: str) -> list[str]:
    problems = []
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append(f"{where}: enableInTreeAutoscaling must be true")
    if spec.get("rayVersion") != ray_version:
        problems.append(f"{where}: rayVersion {spec.get('rayVersion')!r} != {ray_version}")
    head = spec.get("headGroupSpec", {})
    problems += check_group(f"{where}.headGroupSpec", head, head=True)
    groups = spec.get("workerGroupSpecs", [])
    names = [g.get("groupName") for g in groups]
    if len(set(names)) != len(names):
        problems.append(f"{where}: duplicate groupName in {names}")
    kinds = set()
    for g in [head] + groups:
        name = g.get("groupName", "head")
        try:
            image, gpus = group_image(g), quantity(g["template"]["spec"]["containers"][0]
                                                   .get("resources", {}).get("limits", {}).get(GPU, 0))
        except (KeyError, IndexError):
            continue  # reported by check_group
        want = f":{ray_version}-{py}" + ("-gpu" if gpus else "")
        if not image.endswith(want):
            problems.append(f"{where}.{name}: image {image!r} should end in {want!r}")
        if g is not head:
            kinds.add("gpu" if gpus else "cpu")
    for g in groups:
        where_g = f"{where}.workerGroupSpecs[{g.get('groupName')}]"
        problems += check_group(where_g, g, head=False)
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas")
        replicas = g.get("replicas", lo)
        if not (isinstance(hi, int) and hi >= 1 and 0 <= lo <= replicas <= hi):
            problems.append(f"{where_g}: want 0 <= minReplicas <= replicas <= maxReplicas >= 1, "
                            f"got {lo}, {replicas}, {hi}")
    if kinds != {"cpu", "gpu"}:
        problems.append(f"{where}: want a CPU and a GPU worker group, got {sorted(kinds)}")
    return problems


def check_entrypoint(entrypoint: str) -> list[str]:
    """The job's command is one rayflow accepts: its parser, its config and overrides, a shared output."""
    from rayflow.cli import build_parser, resolve_config
    from rayflow.config import ConfigError, load_config

    argv = shlex.split(entrypoint)
    if argv[:3] == ["python", "-m", "rayflow"]:
        argv = argv[3:]
    elif argv[:1] == ["rayflow"]:
        argv = argv[1:]
    else:
        return [f"entrypoint is not a rayflow command: {entrypoint!r}"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        return [f"rayflow's parser rejects the entrypoint's arguments {argv}"]
    if not hasattr(args, "config"):
        return []
    try:
        cfg = load_config(resolve_config(args.config), args.set)
    except ConfigError as e:
        return [f"entrypoint config: {e}"]
    if "://" not in cfg.output_dir or cfg.output_dir.startswith("file://"):
        return [f"output_dir {cfg.output_dir!r} is a local path: pods share no disk, use s3://..."]
    return []


def rayflow_env_vars() -> set[str]:
    """Variables rayflow sets for Ray itself: a job's runtime_env naming one makes Ray refuse the job."""
    from rayflow import runtime

    names = set()
    for attr in ("_RAY_ENV_DEFAULTS", "_QUIET_WORKER_ENV"):
        names |= set(getattr(runtime, attr, {}))
    return names


def dockerfile_workdir() -> str:
    return re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M)[-1]


def check_runtime_env(text: str) -> list[str]:
    env = yaml.safe_load(text) or {}
    ref = load(RUNTIME_ENV_YAML)
    problems = []
    for key in ("pip", "conda", "uv", "py_executable"):
        if key in env:
            problems.append(f"runtimeEnvYAML: `{key}` rebuilds an environment per job; the image has the deps")
    if env.get("excludes") != ref.get("excludes"):
        problems.append(f"runtimeEnvYAML excludes {env.get('excludes')} != jobs/runtime_env.yaml's {ref.get('excludes')}")
    if "working_dir" in env and env["working_dir"] != dockerfile_workdir():
        problems.append(f"runtimeEnvYAML working_dir {env['working_dir']!r} is not the image's checkout "
                        f"{dockerfile_workdir()!r}")
    clash = set(env.get("env_vars", {})) & rayflow_env_vars()
    if clash:
        problems.append(f"runtimeEnvYAML env_vars {sorted(clash)} are set by rayflow itself")
    return problems


def check_kuberay(raycluster: dict, rayjob: dict) -> list[str]:
    version, py = ray_version_of_cluster_yaml()
    problems = []
    for doc, kind in ((raycluster, "RayCluster"), (rayjob, "RayJob")):
        if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != kind:
            problems.append(f"want apiVersion ray.io/v1 kind {kind}, got {doc.get('apiVersion')} {doc.get('kind')}")
    problems += check_cluster_spec("RayCluster.spec", raycluster.get("spec", {}), version, py)
    job = rayjob.get("spec", {})
    if "rayClusterSpec" in job:
        if job["rayClusterSpec"] != raycluster.get("spec"):
            problems.append("RayJob.spec.rayClusterSpec differs from raycluster.yaml's spec")
        if job.get("shutdownAfterJobFinishes") is not True:
            problems.append("RayJob creates a cluster but does not delete it (shutdownAfterJobFinishes)")
    elif job.get("clusterSelector", {}).get("ray.io/cluster") != raycluster.get("metadata", {}).get("name"):
        problems.append("RayJob has neither a rayClusterSpec nor a clusterSelector naming the RayCluster")
    problems += check_entrypoint(job.get("entrypoint", ""))
    problems += check_runtime_env(job.get("runtimeEnvYAML", ""))
    return problems


def test_kuberay_manifests(kuberay):
    assert check_kuberay(*kuberay) == []


def _break(doc: dict, fn) -> dict:
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def _gpu_group(spec: dict) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"])


@pytest.mark.parametrize("which, breakage, expect", [
    ("cluster", lambda d: d.update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
    ("cluster", lambda d: d["spec"].update(enableInTreeAutoscaling=False), "enableInTreeAutoscaling"),
    ("cluster", lambda d: _gpu_group(d["spec"])["rayStartParams"].update({"num-gpus": "2"}), "num-gpus"),
    ("cluster", lambda d: d["spec"]["workerGroupSpecs"][0]["rayStartParams"].update({"num-cpus": "3"}), "num-cpus"),
    ("cluster", lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": "0"}), "head num-cpus"),
    ("cluster", lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas=5), "minReplicas"),
    ("cluster", lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        .update(image="rayflow:2.9.0-py311"), "image"),
    ("cluster", lambda d: _gpu_group(d["spec"])["template"]["spec"]["containers"][0]
        .update(image=group_image(d["spec"]["headGroupSpec"])), "-gpu"),
    ("cluster", lambda d: d["spec"].update(rayVersion="2.9.0"), "rayVersion"),
    ("job", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplicas=1), "differs"),
    ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False), "shutdownAfterJobFinishes"),
    ("job", lambda d: d["spec"].update(entrypoint="python -m rayflow frobnicate --config demo"), "parser"),
    ("job", lambda d: d["spec"].update(entrypoint="python -m rayflow run --config demo --set filter.rho=2"),
     "filter.rho"),
    ("job", lambda d: d["spec"].update(entrypoint="python -m rayflow run --config demo"), "local path"),
    ("job", lambda d: d["spec"].update(entrypoint="python train.py"), "not a rayflow command"),
    ("job", lambda d: d["spec"].update(runtimeEnvYAML="pip: [torch]\n"), "pip"),
    ("job", lambda d: d["spec"].update(runtimeEnvYAML="working_dir: /tmp\nexcludes: []\n"), "excludes"),
])
def test_kuberay_checks_catch_broken_manifests(kuberay, which, breakage, expect):
    raycluster, rayjob = kuberay
    if which == "cluster":
        raycluster = _break(raycluster, breakage)
    else:
        rayjob = _break(rayjob, breakage)
    problems = check_kuberay(raycluster, rayjob)
    assert any(expect in p for p in problems), problems


def _k8s_schema(node):
    """A CRD's structural OpenAPI schema as JSON schema, rejecting unknown fields as `kubectl apply`'s
    strict field validation does."""
    if isinstance(node, list):
        return [_k8s_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _k8s_schema(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    for k in [k for k in node if k.startswith("x-kubernetes")]:
        node.pop(k)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


@pytest.mark.skipif(not os.environ.get("RAYFLOW_KUBERAY_CRDS"),
                    reason="set RAYFLOW_KUBERAY_CRDS to KubeRay's ray-operator/config/crd/bases")
@pytest.mark.parametrize("manifest, crd", [(RAYCLUSTER_YAML, "ray.io_rayclusters.yaml"),
                                           (RAYJOB_YAML, "ray.io_rayjobs.yaml")])
def test_kuberay_manifests_match_the_crds(manifest, crd):
    spec = load(Path(os.environ["RAYFLOW_KUBERAY_CRDS"]) / crd)["spec"]
    version = next(v for v in spec["versions"] if v["name"] == "v1")
    schema = _k8s_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft7Validator(schema)
    doc = load(manifest)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)] == []
    typo = copy.deepcopy(doc)  # a misspelt field must not pass
    spec = typo["spec"].get("rayClusterSpec", typo["spec"])
    spec["enableInTreeAutoScaling"] = spec.pop("enableInTreeAutoscaling")
    assert any("enableInTreeAutoScaling" in e.message for e in validator.iter_errors(typo))


# ---------------------------------------------------------------- one Ray version, one install

def pip_install(text: str) -> tuple[list[str], str]:
    """(flags, Ray requirement) of the one `pip install -c constraints.txt ...` in a command/Dockerfile."""
    m = re.search(r"pip install ([^\n&;]*?-c constraints\.txt[^\n&;]*)", text)
    assert m, "no `pip install -c constraints.txt ...`"
    words = shlex.split(m.group(1).rstrip(" \\"))
    ray_req = [w for w in words if w.startswith("ray[")]
    return [w for w in words if w.startswith("-") or w == "."], (ray_req[0] if ray_req else "")


def test_one_ray_version_everywhere():
    import ray
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    version, py = ray_version_of_cluster_yaml()
    assert ray.__version__ == version, (
        f"cluster.yaml runs Ray {version}, this machine {ray.__version__}: `ray up` / `ray job submit` "
        "need the same version on both sides")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"{py[2]}.{py[3:]}" in SpecifierSet(pyproject["project"]["requires-python"])
    declared = next(Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    assert version in declared.specifier

    cluster = load(CLUSTER_YAML)
    gpu_images = [t.get("docker", {}).get("worker_image") for t in cluster["available_node_types"].values()
                  if t["resources"].get("GPU", 0) > 0]
    assert gpu_images and set(gpu_images) == {f"rayproject/ray:{version}-{py}-gpu"}
    docker = DOCKERFILE.read_text()
    assert re.search(rf"^ARG BASE_IMAGE=rayproject/ray:{re.escape(version)}-{py}$", docker, re.M)
    assert re.search(rf"^ARG RAY_VERSION={re.escape(version)}$", docker, re.M)

    # The same install: `make install`'s constraints, editable, Ray pinned to the image's version
    # with pyproject's extras.
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    for where, text in (("cluster.yaml", setup_install_command(cluster)),
                        ("deploy/Dockerfile", docker.replace("${RAY_VERSION}", version))):
        flags, ray_req = pip_install(text)
        assert "-c" in flags and "-e" in flags and "." in flags, f"{where}: {flags}"
        req = Requirement(ray_req)
        assert req.extras == declared.extras and str(req.specifier) == f"=={version}", f"{where}: {ray_req}"

    # The image holds what the install reads (pyproject's readme too), where cluster.yaml mounts it.
    copied = {w for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", docker, re.M) for w in line.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"], "rayflow"} <= copied
    mounted = next(r for r, local in cluster["file_mounts"].items() if (ROOT / local).resolve() == ROOT)
    assert mounted.replace("~", "/home/ray") == dockerfile_workdir()


def test_version_check_catches_drift(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "__version__", "2.59.0")
    with pytest.raises(AssertionError, match="same version"):
        test_one_ray_version_everywhere()


def test_jobs_readme_documents_the_launch():
    text = (ROOT / "jobs" / "README.md").read_text()
    for pattern in (r"ray up (-y )?cluster\.yaml", r"kubectl apply -f deploy/kuberay/raycluster\.yaml",
                    r"kubectl apply -f deploy/kuberay/rayjob\.yaml", r"ray job submit", r"output_dir=s3://"):
        assert re.search(pattern, text), pattern


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

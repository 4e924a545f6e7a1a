"""cluster/: the `ray up` configs, the KubeRay manifests, the GPU run and Serve configs, jobs/.

Fast and offline: nothing here starts Ray, reaches a cloud API or the network. The `ray up`
configs go through the same functions `ray up` applies before it talks to the cloud
(``prepare_config``: defaults, merged setup commands, docker and min/max checks; then
``validate_config``: Ray's JSON schema and cross-field checks), and through the autoscaler's
node selection to show that GPU demand launches GPU nodes and CPU-only demand does not.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RAY_UP_CONFIGS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RAYSERVICE = CLUSTER / "kuberay" / "rayservice.yaml"
GPU_RUN_CONFIG = CLUSTER / "configs" / "gpu.yaml"
SERVE_GPU = CLUSTER / "serve-gpu.yaml"
JOBS = sorted(p for p in (ROOT / "jobs").glob("*.py") if p.name != "_entry.py")
PYTHON = ROOT / ".venv" / "bin" / "python"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: top level must be a mapping"
    return data


def _ray_version() -> str:
    import ray

    return ray.__version__


# ---------------------------------------------------------------------------------------------
# `ray up` cluster configs
# ---------------------------------------------------------------------------------------------


def _prepared(path: Path) -> dict[str, Any]:
    """What `ray up` holds after its offline steps (before any cloud API call)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_load(path))
    validate_config(config)
    return config


def _gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: t
        for name, t in config["available_node_types"].items()
        if name != config["head_node_type"] and t["resources"].get("GPU", 0) > 0
    }


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_ray_up_config_matches_ray_schema(path: Path) -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import check_legacy_fields

    raw = _load(path)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)  # the file as written, before Ray fills in defaults
    check_legacy_fields(raw)  # multi-node-type format (available_node_types + head_node_type)
    config = _prepared(path)  # prepare_config (fillout_defaults, docker, min/max) + validate_config
    assert config["provider"]["type"] in {"aws", "gcp"}
    assert config["cluster_name"] == "s2d-ray"


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_ray_up_head_takes_no_work_and_gpu_workers_autoscale_from_zero(path: Path) -> None:
    config = _prepared(path)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head node must not offer GPUs"
    assert head["resources"].get("CPU") == 0, "the head node takes no tasks or actors (CPU: 0)"
    assert head["max_workers"] == 0

    gpu_types = _gpu_types(config)
    assert len(gpu_types) >= 2, "expected a 4-GPU and an 8-GPU worker type"
    for name, t in gpu_types.items():
        assert t["min_workers"] == 0, f"{name}: GPU nodes must scale from zero"
        assert t["max_workers"] > 0, f"{name}: GPU nodes must be allowed to scale up"
        assert t["resources"]["CPU"] > 0, name
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [4, 8]
    assert sum(t["min_workers"] for t in types.values()) == 0
    assert config["max_workers"] >= max(t["max_workers"] for t in types.values())
    assert 0 < config["idle_timeout_minutes"] <= 60


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_ray_up_instance_types(path: Path) -> None:
    config = _prepared(path)
    gpu_types = _gpu_types(config)
    if config["provider"]["type"] == "aws":
        shapes = {t["node_config"]["InstanceType"]: t["resources"]["GPU"] for t in gpu_types.values()}
        assert shapes.get("g5.12xlarge") == 4
        assert shapes.get("p4d.24xlarge") == 8 or shapes.get("p5.48xlarge") == 8
    else:
        shapes = {t["node_config"]["machineType"]: t["resources"]["GPU"] for t in gpu_types.values()}
        assert shapes == {"g2-standard-48": 4, "a2-highgpu-8g": 8}
        for name, t in gpu_types.items():
            # GPU VMs cannot live-migrate; the Compute API wants an object here, not a list.
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE", name


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_ray_up_installs_the_project_with_the_gpu_extra(path: Path) -> None:
    config = _prepared(path)
    version = _ray_version()
    docker = config["docker"]
    for image in (docker["image"], docker.get("worker_image", docker["image"])):
        assert image == f"rayproject/ray:{version}-py311-gpu", "image must match the pinned Ray version"
    # The repo is synced to every node and installed from there with the `gpu` extra.
    (remote, local), = config["file_mounts"].items()
    assert (ROOT / local).resolve() == ROOT, "file_mounts must sync the repository root (run ray up from it)"
    assert {".venv", "runs", ".git"} <= set(config["rsync_exclude"])
    for cmds in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any(f"cd {remote}" in c and 'pip install' in c and '".[gpu]"' in c for c in cmds), cmds
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "\ngpu = [" in pyproject, "pyproject.toml must define the `gpu` extra"
    assert f'"ray[data,train,serve]=={version}"' in pyproject


def _nodes_for(config: dict[str, Any], demand: list[dict[str, float]]) -> dict[str, int]:
    """The node types the (v1) autoscaler would launch for `demand` on an empty cluster."""
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    head = config["head_node_type"]
    to_add, residual = get_nodes_for(
        config["available_node_types"], {head: 1}, head, config["max_workers"], demand, scorer
    )
    assert residual == [], f"demand that no node type can hold: {residual}"
    return dict(to_add)


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_autoscaler_launches_gpu_nodes_for_the_gpu_run_config(path: Path) -> None:
    from s2d_ray.config import load_config

    config = _prepared(path)
    cfg = load_config(GPU_RUN_CONFIG)
    gpu_types = _gpu_types(config)
    actor = {"CPU": cfg.sample.actors.num_cpus, "GPU": cfg.sample.actors.num_gpus}
    worker = {"CPU": cfg.train.cpus_per_worker, "GPU": 1}

    for demand in ([actor], [actor] * cfg.sample.actors.max_actors, [worker] * cfg.train.num_workers):
        launched = _nodes_for(config, demand)
        assert launched and set(launched) <= set(gpu_types), launched
    # The 4 ZeRO-3 ranks fit on one node (NVLink/PCIe rather than the network).
    assert sum(_nodes_for(config, [worker] * cfg.train.num_workers).values()) == 1
    # CPU-only work (Ray Data reads/writes) never pays for a GPU node.
    launched = _nodes_for(config, [{"CPU": 1}] * 4)
    assert launched and not set(launched) & set(gpu_types), launched


# ---------------------------------------------------------------------------------------------
# The GPU run config and jobs/
# ---------------------------------------------------------------------------------------------


def test_gpu_run_config_loads_with_gpu_placement() -> None:
    from s2d_ray.config import load_config

    cfg = load_config(GPU_RUN_CONFIG)
    assert cfg.sample.actors.num_gpus >= 1
    assert cfg.sample.actors.num_gpus == cfg.sample.engine.tensor_parallel_size
    assert (cfg.sample.actors.min_actors, cfg.sample.actors.max_actors) == (1, 8)
    assert cfg.sample.engine.gpu_memory_utilization == 0.85
    assert cfg.train.use_gpu is True
    assert cfg.train.num_workers == 4 and cfg.train.zero_stage == 3
    assert cfg.output_dir.startswith("s3://")
    assert "/" in cfg.model, "a Hugging Face id (org/name)"
    # Same keys as the laptop default: the GPU config is an instance of the same schema.
    demo = _load(ROOT / "configs" / "demo.yaml")
    assert set(_load(GPU_RUN_CONFIG)) <= set(demo) | {"task"}


def test_gpu_run_config_task_sizes_exist() -> None:
    """Built-in task inputs are finite: n_train/n_test must not ask for more than exist."""
    from s2d_ray.config import load_config
    from s2d_ray.tasks import get_task

    cfg = load_config(GPU_RUN_CONFIG)
    for source, n, split in ((cfg.data.train, cfg.data.n_train, "train"), (cfg.data.test, cfg.data.n_test, "test")):
        if source.startswith("task:") and n is not None:
            assert len(get_task(source.removeprefix("task:")).generate(n, cfg.data.seed, split)) == n


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_job_entrypoint_help(job: Path) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    proc = subprocess.run(
        [str(python), job.name, "--help"], cwd=job.parent, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--config" in proc.stdout and "--set" in proc.stdout


def test_jobs_cover_every_stage() -> None:
    assert {p.stem for p in JOBS} >= {"distill", "sample", "train", "eval"}


# ---------------------------------------------------------------------------------------------
# KubeRay manifests
# ---------------------------------------------------------------------------------------------


def _check_cluster_spec(spec: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Required RayCluster fields; returns the GPU worker groups."""
    version = _ray_version()
    assert spec["rayVersion"] == version, f"{where}: rayVersion must match the image"
    assert spec["enableInTreeAutoscaling"] is True, f"{where}: the Ray autoscaler must manage worker pods"

    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"].startswith(f"rayproject/ray:{version}-")
    assert "nvidia.com/gpu" not in head_container.get("resources", {}).get("limits", {}), f"{where}: CPU head"

    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker groups"
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names)
    gpu_groups = []
    for g in groups:
        assert isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        container = g["template"]["spec"]["containers"][0]
        assert container["image"].startswith(f"rayproject/ray:{version}-") and container["image"].endswith("-gpu")
        limits = container["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, f"{g['groupName']}: GPU worker groups request nvidia.com/gpu"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        assert g["minReplicas"] == 0 and g["maxReplicas"] > 0, f"{g['groupName']}: autoscale from zero"
        gpu_groups.append(g)
    return gpu_groups


def _cpu_count(quantity: str | int) -> float:
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _check_runtime_env(env: dict[str, Any]) -> None:
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of working_dir URIs, pip, env_vars
    assert env["working_dir"].startswith(("https://", "s3://", "gs://")), "pods cannot upload a local dir"
    packages = env["pip"]["packages"] if isinstance(env["pip"], dict) else env["pip"]
    assert any(p.endswith("[gpu]") for p in packages), "install the project's gpu extra"
    # Installing CUDA torch + vLLM per pod outlasts Ray's default 600 s runtime-env timeout.
    assert env["config"]["setup_timeout_seconds"] >= 1800


def _pod_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


@pytest.mark.parametrize("path,field", [(RAYJOB, "rayClusterSpec"), (RAYSERVICE, "rayClusterConfig")], ids=["rayjob", "rayservice"])
def test_kuberay_pods_all_have_storage_credentials(path: Path, field: str) -> None:
    for pod in _pod_specs(_load(path)["spec"][field]):
        assert pod.get("serviceAccountName") == "s2d-ray", pod["containers"][0]["name"]


def test_rayjob_backoff_limit_needs_kuberay_1_2() -> None:
    text = RAYJOB.read_text()
    assert "backoffLimit" in _load(RAYJOB)["spec"] and "operator (>= 1.2)" in text


def test_rayjob_manifest() -> None:
    from s2d_ray.config import load_config

    doc = _load(RAYJOB)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    argv = spec["entrypoint"].split()
    assert argv[:2] == ["python", "jobs/distill.py"]
    config_path = argv[argv.index("--config") + 1]
    assert config_path == "cluster/configs/gpu.yaml" and (ROOT / config_path).is_file(), spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_runtime_env(yaml.safe_load(spec["runtimeEnvYAML"]))

    gpu_groups = _check_cluster_spec(spec["rayClusterSpec"], "RayJob")
    cfg = load_config(ROOT / config_path)
    per_pod = [(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]),
                _cpu_count(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]), g) for g in gpu_groups]
    # The train workers fit in one pod; all engine actors fit at maxReplicas.
    assert any(gpus >= cfg.train.num_workers and cpus >= cfg.train.num_workers * cfg.train.cpus_per_worker
               for gpus, cpus, _ in per_pod)
    assert sum(gpus * g["maxReplicas"] for gpus, _, g in per_pod) >= cfg.sample.actors.max_actors * cfg.sample.actors.num_gpus


def _serve_app(serve_config: dict[str, Any]) -> dict[str, Any]:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)  # what `serve deploy` / KubeRay submit
    (app,) = serve_config["applications"]
    assert app["import_path"] == "s2d_ray.serving.app:build_app"
    (deployment,) = app["deployments"]
    auto = deployment["autoscaling_config"]
    assert 1 <= auto["min_replicas"] <= auto["max_replicas"] and auto["target_ongoing_requests"] > 0
    assert deployment["ray_actor_options"]["num_gpus"] >= 1
    # The code-side defaults (args) say the same as the deployment override.
    args = app["args"]
    assert (args["min_replicas"], args["max_replicas"], args["target_ongoing_requests"]) == (
        auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"])
    assert args["num_gpus"] == deployment["ray_actor_options"]["num_gpus"] == args["engine"]["tensor_parallel_size"]
    from s2d_ray.serving.app import S2DServer, ServeSettings

    ServeSettings(**args)  # the app accepts these args (unknown keys are errors)
    assert deployment["name"] == S2DServer.name
    return app


def test_rayservice_manifest() -> None:
    doc = _load(RAYSERVICE)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    spec = doc["spec"]
    # RayService names its cluster `rayClusterConfig` (RayJob: `rayClusterSpec`).
    assert "rayClusterSpec" not in spec, "RayService's cluster field is rayClusterConfig (KubeRay drops rayClusterSpec)"
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    app = _serve_app(serve_config)
    assert app["args"]["model_dir"] == "s3://YOUR-BUCKET/s2d-runs/demo/model"
    _check_runtime_env(app["runtime_env"])
    assert serve_config["http_options"]["host"] == "0.0.0.0"

    gpu_groups = _check_cluster_spec(spec["rayClusterConfig"], "RayService")
    deployment = app["deployments"][0]
    gpus_per_replica = deployment["ray_actor_options"]["num_gpus"]
    capacity = sum(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * g["maxReplicas"]
                   for g in gpu_groups)
    assert capacity >= deployment["autoscaling_config"]["max_replicas"] * gpus_per_replica


def test_serve_gpu_config_is_the_rayservice_app() -> None:
    serve_config = _load(SERVE_GPU)
    app = _serve_app(copy.deepcopy(serve_config))
    service_app = yaml.safe_load(_load(RAYSERVICE)["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"] == service_app["args"]
    assert app["deployments"] == service_app["deployments"]


# ---------------------------------------------------------------------------------------------
# What the GPU nodes boot and what they may touch
# ---------------------------------------------------------------------------------------------

AWS_DLAMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def test_gpu_extra_is_a_cuda_13_build_that_needs_driver_580() -> None:
    """The premise of the image checks below: vLLM 0.33 pins torch 2.14 (CUDA 13 wheels)."""
    assert '"vllm==0.33.0"' in (ROOT / "pyproject.toml").read_text()


def test_aws_nodes_boot_the_oss_driver_dlami() -> None:
    config = _prepared(CLUSTER / "aws.yaml")
    for name, t in config["available_node_types"].items():
        assert t["node_config"].get("ImageId") == AWS_DLAMI, name  # Ray's default AMI has a driver < 580


def test_gcp_nodes_boot_a_driver_580_image() -> None:
    import re

    config = _prepared(CLUSTER / "gcp.yaml")
    for name, t in config["available_node_types"].items():
        (disk,) = t["node_config"]["disks"]
        family = disk["initializeParams"]["sourceImage"]
        driver = re.search(r"-nvidia-(\d+)$", family)
        assert family.startswith("projects/deeplearning-platform-release/") and driver and int(driver.group(1)) >= 580, (name, family)


@pytest.mark.parametrize("path", RAY_UP_CONFIGS, ids=lambda p: p.name)
def test_every_worker_type_has_storage_credentials(path: Path) -> None:
    """Ray gives its instance profile / service account to the head only; train workers and
    engine actors on the workers read and write output_dir too."""
    config = _prepared(path)
    head = config["head_node_type"]
    for name, t in config["available_node_types"].items():
        if name == head:
            continue
        nc = t["node_config"]
        if path.name == "aws.yaml":
            assert nc["IamInstanceProfile"] == {"Name": "s2d-ray-worker"}, name
        else:
            (account,) = nc["serviceAccounts"]
            assert account["email"].startswith("s2d-ray-worker@"), name
            assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"], name

"""Deployment files in cluster/ are checked against Ray's own schemas and against each other.

The `ray up` YAMLs go through the JSON schema shipped in the installed ray package and through
the same validate/prepare functions `ray up` calls; the Serve configs go through Serve's
pydantic schema; the RayService is checked field by field (no KubeRay CRD is available
offline). Each check is also run on a deliberately broken copy, to show it can fail.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAY_UP_CONFIGS = ("aws-gpu.yaml", "gcp-gpu.yaml")
IMPORT_PATH = "app.serve_app:build_app"
SECRETS_DIR = "~/.stemcell/cluster-secrets"
NODE_ENV = "source ~/stemcell/cluster/node-env.sh"


def _load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def _ray_schema() -> dict[str, Any]:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _check_ray_up(config: dict[str, Any]) -> None:
    """What `ray up` does before touching a cloud: schema, cross-field checks, defaults."""
    jsonschema.validate(config, _ray_schema())
    validate_config(copy.deepcopy(config))
    validate_config(prepare_config(copy.deepcopy(config)))


def _rayservice() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((CLUSTER / "rayservice.yaml").read_text()))
    return next(d for d in docs if d and d.get("kind") == "RayService")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec["template"]["spec"]["containers"]


def _rayservice_problems(doc: dict[str, Any]) -> list[str]:
    """Everything KubeRay and Stemcell need from the RayService, as a list of problems."""
    problems: list[str] = []
    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != "RayService":
        problems.append("not a ray.io/v1 RayService")
    spec = doc.get("spec", {})
    serve_config = yaml.safe_load(spec.get("serveConfigV2", "")) or {}
    try:
        ServeDeploySchema.model_validate(serve_config)
    except Exception as exc:  # pydantic's ValidationError
        problems.append(f"serveConfigV2 rejected by Serve: {exc}")
    apps = serve_config.get("applications") or [{}]
    if apps[0].get("import_path") != IMPORT_PATH:
        problems.append("serveConfigV2 does not run app.serve_app:build_app")
    if apps[0].get("args") != {"config_path": "configs/serve.yaml"}:
        problems.append("serveConfigV2 args must be {config_path: configs/serve.yaml}")
    cluster = spec.get("rayClusterConfig", {})
    if cluster.get("authOptions", {}).get("mode") != "token":
        problems.append("Ray token auth is not enabled (authOptions.mode)")
    head = cluster.get("headGroupSpec", {})
    workers = cluster.get("workerGroupSpecs", [])
    for group in [head, *workers]:
        params = group.get("rayStartParams", {})
        if not all(isinstance(v, str) for v in params.values()):  # KubeRay: map[string]string
            problems.append(f"non-string rayStartParams: {params}")
    if head.get("rayStartParams", {}).get("dashboard-host") != "0.0.0.0":
        problems.append("head dashboard-host is not 0.0.0.0")
    gpu_limits = [
        _containers(w)[0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
        for w in workers
    ]
    if not any(int(limit) > 0 for limit in gpu_limits):
        problems.append("no worker group with an nvidia.com/gpu limit")
    for w in workers:
        if not w.get("minReplicas", 0) <= w.get("replicas", 0) <= w.get("maxReplicas", 0):
            problems.append(f"group {w.get('groupName')}: replicas outside [min, max]")
    return problems


# ---------------------------------------------------------------- ray up configs
@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_config_passes_rays_own_schema_and_checks(name: str) -> None:
    _check_ray_up(_load(name))


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.pop("provider"),  # required by the schema
        lambda c: c.update(setup_command=["typo"]),  # unknown top-level key
        lambda c: c["available_node_types"]["head"].pop("resources"),  # required per node type
        lambda c: c["available_node_types"]["head"].update(resources={"GPU": 0.5}),  # not int
        lambda c: c.update(head_node_type="no-such-type"),  # cross-field check in Ray
    ],
)
def test_a_broken_copy_of_a_ray_up_config_is_rejected(name: str, break_it: Any) -> None:
    config = _load(name)
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _check_ray_up(config)


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_nodes_start_with_auth_dashboard_and_metrics(name: str) -> None:
    config = _load(name)
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    for flag in ["--head", "--dashboard-host=0.0.0.0", "--metrics-export-port=8080"]:
        assert flag in head
    assert "--address=$RAY_HEAD_IP:6379" in worker and "--metrics-export-port=8080" in worker
    assert NODE_ENV in head and NODE_ENV in worker  # token auth env before every `ray start`
    assert config["file_mounts"] == {"~/stemcell": ".", SECRETS_DIR: SECRETS_DIR}


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_nodes_run_the_stemcell_image_and_install_nothing_at_boot(name: str) -> None:
    config = _load(name)
    assert config["docker"]["image"] == _containers(_rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"])[0]["image"]
    assert "head_image" not in config["docker"] and "worker_image" not in config["docker"]
    commands = [*config["setup_commands"], *config["head_setup_commands"], *config["worker_setup_commands"],
                *(c for t in config["available_node_types"].values() for c in t.get("worker_setup_commands", []))]
    assert not [c for c in commands if "pip install" in c or "apt-get" in c]


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_sync_ships_the_package_but_never_overwrites_the_clusters_state(name: str) -> None:
    """configs/serve.yaml serves pkg/... (every node needs it) and keeps state under runs/
    (on the head, the live database, which a re-run of `ray up` must not replace)."""
    serve = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    assert Path(serve["package_dir"]).parts[0] == "pkg"
    assert Path(serve["state_path"]).parts[0] == "runs"
    config = _load(name)
    excluded = config["rsync_exclude"]
    assert "/runs/" in excluded and ".venv" in excluded and ".git" in excluded
    assert not any("pkg" in pattern for pattern in excluded)
    assert "rsync_filter" not in config  # a .gitignore filter would drop pkg/


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_gpu_workers_autoscale_from_zero_and_head_has_no_gpu(name: str) -> None:
    config = _load(name)
    types = config["available_node_types"]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers and all(w["min_workers"] == 0 for w in workers.values())
    assert all(w["max_workers"] <= config["max_workers"] for w in workers.values())
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    if config["provider"]["type"] == "aws":
        kinds = {w["node_config"]["InstanceType"] for w in workers.values()}
        assert kinds == {"g5.xlarge", "g6.xlarge"}
    else:  # GCP states resources itself; T4 needs an attached accelerator, L4 comes with g2
        assert all(w["resources"]["GPU"] == 1 for w in workers.values())
        t4 = workers["gpu_t4"]["node_config"]["guestAccelerators"]
        assert t4 == [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]
        assert workers["gpu_l4"]["node_config"]["machineType"].startswith("g2-")


def test_aws_and_gcp_configure_nodes_identically() -> None:
    aws, gcp = _load("aws-gpu.yaml"), _load("gcp-gpu.yaml")
    shared = ["setup_commands", "head_start_ray_commands", "worker_start_ray_commands", "docker",
              "file_mounts", "rsync_exclude", "initialization_commands"]
    for key in shared:
        assert aws[key] == gcp[key], key


def test_node_env_enables_token_auth_from_the_synced_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / ".stemcell" / "cluster-secrets"
    secrets.mkdir(parents=True)
    (secrets / "admin_token").write_text("admin-secret-value")
    env = subprocess.run(
        ["bash", "-c", f"source {CLUSTER / 'node-env.sh'} && env"],
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert "RAY_AUTH_MODE=token" in env
    assert f"RAY_AUTH_TOKEN_PATH={secrets / 'ray_auth_token'}" in env
    assert "STEMCELL_ADMIN_TOKEN=admin-secret-value" in env


# ---------------------------------------------------------------- Serve and RayService
def test_rayservice_has_what_kuberay_and_stemcell_need() -> None:
    assert _rayservice_problems(_rayservice()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.update(apiVersion="ray.io/v1alpha1"),
        lambda d: d["spec"].update(serveConfigV2="applications:\n  - name: x\n"),  # no import_path
        lambda d: d["spec"]["rayClusterConfig"].pop("authOptions"),
        lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update(
            {"num-cpus": 0}
        ),
        lambda d: _containers(d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0])[0].update(
            resources={"limits": {"cpu": "4"}}
        ),
    ],
)
def test_a_broken_copy_of_the_rayservice_is_reported(break_it: Any) -> None:
    doc = copy.deepcopy(_rayservice())
    break_it(doc)
    assert _rayservice_problems(doc) != []


def test_serve_deploy_config_is_valid_and_matches_the_rayservice() -> None:
    for_ray_up = _load("serve-deploy.yaml")
    ServeDeploySchema.model_validate(for_ray_up)
    assert yaml.safe_load(_rayservice()["spec"]["serveConfigV2"]) == for_ray_up


def test_images_working_dir_and_ray_versions_agree_with_the_installed_ray() -> None:
    version = ray.__version__
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{version}-py311-gpu" in dockerfile
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == version
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    containers = [_containers(g)[0] for g in groups]
    assert {c["workingDir"] for c in containers} == {workdir}
    assert len({c["image"] for c in containers}) == 1


def test_rayservice_head_keeps_the_state_database_on_a_persistent_volume() -> None:
    docs = list(yaml.safe_load_all((CLUSTER / "rayservice.yaml").read_text()))
    claims = {d["metadata"]["name"] for d in docs if d and d["kind"] == "PersistentVolumeClaim"}
    pod = _rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state_path = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())["state_path"]
    state_dir = f"{container['workingDir']}/{Path(state_path).parts[0]}"  # relative to workingDir
    assert volumes[mounts[state_dir]] in claims
    assert pod["securityContext"]["fsGroup"] == 100


def test_tokens_come_from_secrets_or_the_node_environment_never_literals() -> None:
    serve_env = _load("serve-deploy.yaml")["applications"][0]["runtime_env"]["env_vars"]
    runtime_env = _load("runtime_env.yaml")
    RuntimeEnv(**runtime_env)  # Ray accepts the runtime_env as written
    for env_vars in [serve_env, runtime_env["env_vars"]]:
        for key, value in env_vars.items():
            if "TOKEN" in key:
                assert value == f"${{{key}}}", key
    for group in [_rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"],
                  *_rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]]:
        for var in _containers(group)[0].get("env", []):
            if "TOKEN" in var["name"]:
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], var


# ---------------------------------------------------------------- CUDA: the pinned torch vs node drivers
# NVIDIA's minimum Linux driver per CUDA toolkit (the CUDA a torch wheel is built with), major part.
CUDA_MIN_DRIVER = {"12.1": 530, "12.4": 550, "12.6": 560, "12.8": 570, "12.9": 575, "13.0": 580}


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (CLUSTER / "Dockerfile").read_text(), re.M))


def _gpu_node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_the_pinned_torch_build_and_its_driver_floor_agree() -> None:
    """The image's torch is the version pyproject allows and the venv resolves; MIN_DRIVER is the
    floor NVIDIA gives for the CUDA it is built with."""
    args = _dockerfile_args()
    import torch
    import torchvision

    assert int(args["MIN_DRIVER"]) >= CUDA_MIN_DRIVER[args["TORCH_CUDA"]]
    assert torch.__version__.split("+")[0] == args["TORCH_VERSION"]
    assert torchvision.__version__.split("+")[0] == args["TORCHVISION_VERSION"]
    if torch.version.cuda is not None:  # a CUDA build in the venv: the same CUDA as the image's
        assert torch.version.cuda == args["TORCH_CUDA"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch>=2.4,<={args["TORCH_VERSION"]}"' in pyproject


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_every_gpu_node_type_declares_and_checks_a_driver_the_pinned_torch_runs_on(name: str) -> None:
    floor = int(_dockerfile_args()["MIN_DRIVER"])
    for node_type, spec in _gpu_node_types(_load(name)).items():
        checks = [c for c in spec.get("initialization_commands", []) if "STEMCELL_MIN_DRIVER=" in c]
        assert len(checks) == 1, node_type
        declared = int(re.search(r"STEMCELL_MIN_DRIVER=(\d+)", checks[0]).group(1))
        assert declared >= floor, (node_type, declared)
        image = str(spec["node_config"].get("ImageId") or spec["node_config"]["disks"][0]["initializeParams"]["sourceImage"])
        branch = re.search(r"nvidia-(\d+)", image)
        if branch:  # GCP families name their driver branch
            assert int(branch.group(1)) >= floor, (node_type, image)
        else:
            assert "nvidia-driver" in image, (node_type, image)  # AWS: the driver AMI family, checked at boot
    gpu_workers = _rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in gpu_workers:
        start = " ".join(_containers(group)[0]["lifecycle"]["postStart"]["exec"]["command"])
        assert "STEMCELL_MIN_DRIVER" in start and "exit 1" in start


@pytest.mark.parametrize("driver, ok", [("580.65.06", True), ("595.91.07", True), ("570.172.08", False),
                                        ("535.54.03", False), ("", False)])
def test_the_boot_driver_check_refuses_an_old_driver(tmp_path: Path, driver: str, ok: bool) -> None:
    """Run the ray up check against a fake nvidia-smi printing `driver`."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{driver}'\n")
    fake.chmod(0o755)
    spec = _gpu_node_types(_load("aws-gpu.yaml"))["gpu_a10g"]
    check = next(c for c in spec["initialization_commands"] if "STEMCELL_MIN_DRIVER=" in c)
    run = subprocess.run(["bash", "-c", check], env={"PATH": f"{tmp_path}:{os.environ['PATH']}"},
                         capture_output=True, text=True)
    assert (run.returncode == 0) == ok
    assert ok or "FATAL: NVIDIA driver" in run.stderr

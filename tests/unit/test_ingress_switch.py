"""`http.ingress`: the shipped serve.yaml and the cluster files agree on it, and `build_app` derives
Serve's own limits (queue, Retry-After of its 503) from `limits` and passes the ingress flag to the replicas."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.serve_app import build_app
from stemcell.admission import derive_limits, serve_retry_after_s
from stemcell.serve_config import HttpSection, load_serve_config
from tests.helpers.builders import tiny_package

ROOT = Path(__file__).resolve().parents[2]


def _shipped_env() -> dict[str, str]:
    return HttpSection.model_validate(yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())["http"]).serve_env()


def test_proxy_needs_no_environment_and_haproxy_gets_a_longer_readiness_check() -> None:
    assert HttpSection(ingress="proxy").serve_env() == {}
    env = HttpSection(ingress="haproxy").serve_env()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and int(env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]) >= 30
    assert HttpSection().ingress == "haproxy"  # the default (docs/deploy.md section 8 says why)


def test_cluster_files_give_every_node_the_shipped_ingress_environment() -> None:
    env = _shipped_env()
    assert env, "serve.yaml ships http.ingress: haproxy"
    node_env = dict(re.findall(r"^export (\w+)=(\S+)$", (ROOT / "cluster" / "node-env.sh").read_text(), re.MULTILINE))
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "rayservice.yaml").read_text()))
    cluster = next(d for d in docs if d and d.get("kind") == "RayService")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        given = {v["name"]: v.get("value") for v in container.get("env", [])}
        assert {k: given.get(k) for k in env} == env, group.get("groupName", "head")
    assert {k: node_env.get(k) for k in env} == env  # ray up: sourced before `ray start` on every node


def test_build_app_derives_serve_limits_and_passes_the_flag_to_replicas(tmp_path: Path, monkeypatch) -> None:
    tiny_package(tmp_path / "pkg", branchpoints=(0,), apps=("car",))
    monkeypatch.setenv("STEMCELL_SWITCH_TOKEN", "s" * 32)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"package_dir": str(tmp_path / "pkg"), "state_path": str(tmp_path / "s.db"),
                                    "admin_token_env": "STEMCELL_SWITCH_TOKEN",
                                    "limits": {"max_queued_frames": 32, "answer_within_s": 1.5, "retry_after_s": 1}}))
    config = load_serve_config(path)
    derived = derive_limits(32, config.executors.count, config.executors.max_batch)
    env = HttpSection(ingress="haproxy").serve_env()
    for replica_env, runtime_env in [(None, None), (env, {"env_vars": env})]:
        deployment = build_app({"config_path": str(path)}, replica_env=replica_env)._bound_deployment
        assert deployment.max_ongoing_requests == derived.max_ongoing_requests
        assert deployment.max_queued_requests == derived.max_queued_requests
        assert deployment.backpressure_config.retry_after_s == serve_retry_after_s(1.5, 1) == 2
        assert deployment.ray_actor_options.get("runtime_env") == runtime_env

"""What the reliability benchmarks and tests share: a local (multi-node) Ray, a deployed Stemcell, streaming cameras.

Used by `benchmarks/faults.py`, `benchmarks/load.py`, `benchmarks/security_fuzz.py` and the
integration tests `tests/integration/test_multinode.py` / `test_security_fuzz.py`, so every one
of them deploys the real Serve app from a real `serve.yaml` the same way.

A local multi-node cluster (`ray.cluster_utils.Cluster`) writes its address to
`$RAY_TMPDIR/ray/ray_current_cluster`, and any plain `ray.init()` on the machine then *joins* it
instead of starting its own Ray.  `start_cluster` therefore moves RAY_TMPDIR to a private folder
first: other processes (other people's tests on a shared box) keep their own Ray.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray
import yaml
from ray import serve
from ray.cluster_utils import Cluster

from app.serve_app import build_app
from benchmarks.ports import reserved_port, wait_listening
from stemcell.client import Admin, Camera, RetryPolicy, StemcellError
from stemcell.imaging import encode_jpeg


# Ray's node failure detection, made fast for local clusters: a node whose raylet stops answering
# is declared dead after ~period * threshold (defaults 3 s x 5 = 15 s plus an initial delay).
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                          "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}


ROLE_LABEL = "stemcell-role"  # node label: "head" (ingress, state store) or "gpu" (executors)
HEAD_LABELS, GPU_LABELS = {ROLE_LABEL: "head"}, {ROLE_LABEL: "gpu"}


def start_cluster(workers: int, *, head_cpus: float = 1, worker_cpus: float = 2, worker_gpus: float = 1,
                  fast_failure_detection: bool = True) -> Cluster:
    """A connected local Ray cluster: a head without GPUs (ingress, state store) and `workers` GPU nodes.

    GPUs are logical (Ray bookkeeping; the executors fall back to the CPU).  Nodes carry
    HEAD_LABELS / GPU_LABELS, for the `node_labels` options of `serve.yaml`.  `stop_cluster` when done.
    """
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are length-limited
    os.environ["RAY_TMPDIR"] = tmp
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    system_config = FAST_FAILURE_DETECTION if fast_failure_detection else {}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "num_gpus": 0, "include_dashboard": False, "_system_config": system_config,
        "labels": HEAD_LABELS})
    for _ in range(workers):
        add_worker(cluster, worker_cpus, worker_gpus)
    cluster.wait_for_nodes()
    cluster.private_tmpdir = tmp
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """Disconnect, kill every node's processes, and remove the private RAY_TMPDIR (logs included)."""
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(cluster.private_tmpdir, ignore_errors=True)


def add_worker(cluster: Cluster, cpus: float = 2, gpus: float = 1) -> Any:
    return cluster.add_node(num_cpus=cpus, num_gpus=gpus, labels=GPU_LABELS)


def node_of_actor(name: str, namespace: str, timeout_s: float = 60.0) -> str:
    """The Ray node id an actor runs on now (asks the actor itself: no dashboard/state API needed)."""
    handle = ray.get_actor(name, namespace=namespace)
    return ray.get(handle.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()), timeout=timeout_s)


def answers_away_from(name: str, namespace: str, node_id: str) -> bool:
    """True once actor `name` answers from a node other than `node_id` (e.g. restarted off a dead node)."""
    try:
        return node_of_actor(name, namespace, timeout_s=2.0) != node_id
    except (ray.exceptions.RayError, TimeoutError, ValueError):  # dead, restarting, or not yet re-registered
        return False


def replica_nodes(app_name: str, deployment: str = "StemcellIngress") -> list[str]:
    """Node ids of a Serve deployment's replicas (Serve names their actors SERVE_REPLICA::app#deployment#id)."""
    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    return sorted(node_of_actor(name, "serve") for name in names)


def write_serve_config(root: Path, package: Path, *, app_name: str, namespace: str, token_env: str,
                       executors: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                       ingress: dict[str, Any] | None = None) -> Path:
    """A `serve.yaml` for `package` with its state under `root` (sections merged over small defaults)."""
    config = root / f"{app_name}.yaml"
    config.write_text(yaml.safe_dump({
        "package_dir": str(package), "state_path": str(root / f"{app_name}-state.db"), "admin_token_env": token_env,
        "app_name": app_name, "ingress": {"num_cpus": 0.5, **(ingress or {})},
        "executors": {"count": 1, "num_cpus": 1, "num_gpus": 0.25, "namespace": namespace, "max_wait_ms": 2,
                      **(executors or {})},
        "limits": limits or {},
    }))
    return config


@dataclass
class Deployment:
    """A running Stemcell Serve app and the secrets to talk to it."""

    url: str
    admin_token: str
    config_path: Path
    app_name: str
    namespace: str
    camera_tokens: dict[str, str] = field(default_factory=dict)
    camera_executors: dict[str, str] = field(default_factory=dict)

    def admin(self, **kwargs: Any) -> Admin:
        return Admin(self.url, self.admin_token, timeout=120.0, **kwargs)

    def redeploy(self) -> None:
        serve.run(build_app({"config_path": str(self.config_path)}), name=self.app_name, route_prefix="/")

    def add_cameras(self, ids: Iterable[str], apps: Sequence[str | dict], fps: float = 10.0) -> None:
        with self.admin() as admin:
            for cam in ids:
                added = admin.add_camera(cam, apps, fps=fps)
                self.camera_tokens[cam] = added["token"]
                self.camera_executors[cam] = added["executor"]

    def add_balanced_cameras(self, per_executor: int, executors: int, apps: Sequence[str | dict],
                             prefix: str = "cam") -> list[str]:
        """`per_executor` cameras on each executor (ids are hashed onto executors: register, keep what fits)."""
        kept: list[str] = []
        counts: dict[str, int] = {}
        with self.admin() as admin:
            for i in range(64 * per_executor * executors):
                if len(kept) == per_executor * executors:
                    return kept
                cam = f"{prefix}-{i}"
                added = admin.add_camera(cam, apps)
                if counts.get(added["executor"], 0) >= per_executor:
                    admin.remove_camera(cam)
                    continue
                counts[added["executor"]] = counts.get(added["executor"], 0) + 1
                self.camera_tokens[cam], self.camera_executors[cam] = added["token"], added["executor"]
                kept.append(cam)
        raise RuntimeError(f"could not place {per_executor} cameras on each of {executors} executors: {counts}")


def deploy(config_path: Path, *, proxy_location: str = "HeadOnly") -> Deployment:
    """`serve.start` + `serve.run` of the app in `config_path` on the connected Ray; waits until it answers.

    HeadOnly: on a local multi-node cluster every "node" shares one network namespace, so one HTTP
    proxy per node would fight over the port.
    """
    config = yaml.safe_load(config_path.read_text())
    token = os.environ.get(config["admin_token_env"]) or secrets.token_urlsafe(32)
    os.environ[config["admin_token_env"]] = token
    with reserved_port() as port:  # held until Serve's proxy listens there (see benchmarks/ports.py)
        serve.start(proxy_location=proxy_location, http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config_path": str(config_path)}), name=config["app_name"], route_prefix="/")
        wait_listening(port)
    return Deployment(f"http://127.0.0.1:{port}", token, config_path, config["app_name"],
                      config["executors"]["namespace"])


def worker_log_lines() -> list[str]:
    """Every line the Ray workers of the connected session logged so far (ingress replicas included):
    how a test or a benchmark sees what the server logged, e.g. its `-> 500` request lines."""
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())  # noqa: SLF001 - this session's logs
    return [line for path in sorted(logs.glob("worker-*")) for line in path.read_text(errors="replace").splitlines()]


def jpeg_frames(n: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


# --------------------------------------------------------------------------- streaming cameras
@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange (a request or one of its retries) as the wire saw it."""

    camera: str
    t: float  # monotonic time the answer (or the failure) arrived
    status: int  # HTTP status; 0 when no answer came (connection refused, reset, timeout)


@dataclass(frozen=True)
class Outcome:
    """One frame as the camera's application saw it: after the client's retries."""

    camera: str
    started: float
    ended: float
    ok: bool
    error: str = ""


class _CountingTransport(httpx.HTTPTransport):
    """Records every exchange below the client's retry loop, so retried failures are counted too."""

    def __init__(self, camera: str, sink: Callable[[Attempt], None], clock: Callable[[], float]) -> None:
        super().__init__()
        self._camera, self._sink, self._clock = camera, sink, clock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self._sink(Attempt(self._camera, self._clock(), 0))
            raise
        self._sink(Attempt(self._camera, self._clock(), response.status_code))
        return response


class CameraFleet:
    """Cameras streaming JPEGs at `fps` each (a camera that falls behind skips ahead, as real ones do).

    Each camera is a `stemcell.client.Camera` with retries, in its own thread: what a fleet of
    independent devices does.  `outcomes` are frames after retries, `attempts` every exchange.
    """

    def __init__(self, url: str, tokens: dict[str, str], frames: Sequence[bytes], *, fps: float = 10.0,
                 policy: RetryPolicy | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.outcomes: list[Outcome] = []
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clock = clock
        self._frames, self._period = list(frames), 1.0 / fps
        policy = policy or RetryPolicy(retries=10, base_delay_s=0.1, max_delay_s=1.0)
        self._cameras = [Camera(url, token, cam, policy=policy, timeout=timeout_s,
                                transport=_CountingTransport(cam, self._record_attempt, clock))
                         for cam, token in tokens.items()]
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self._cameras]

    def _record_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def _run(self, camera: Camera) -> None:
        i = 0
        next_at = self._clock()
        while not self._stop.is_set():
            started = self._clock()
            try:
                camera.infer(self._frames[i % len(self._frames)])
                outcome = Outcome(camera.camera_id, started, self._clock(), True)
            except StemcellError as exc:
                outcome = Outcome(camera.camera_id, started, self._clock(), False, f"{exc.status}: {exc.message[:120]}")
            with self._lock:
                self.outcomes.append(outcome)
            i += 1
            next_at = max(next_at + self._period, self._clock())
            self._stop.wait(max(0.0, next_at - self._clock()))

    def __enter__(self) -> CameraFleet:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        for c in self._cameras:
            c.close()

    def snapshot(self) -> tuple[list[Outcome], list[Attempt]]:
        with self._lock:
            return list(self.outcomes), list(self.attempts)

    def wait_for_success_after(self, t0: float, cameras: Iterable[str], timeout_s: float) -> float | None:
        """Monotonic time by which every camera in `cameras` had a frame started after `t0` succeed; None on timeout."""
        wanted = set(cameras)
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            outcomes, _ = self.snapshot()
            first: dict[str, float] = {}  # each camera's first success (not its latest: that is just "now")
            for o in outcomes:
                if o.ok and o.started >= t0 and o.camera in wanted:
                    first[o.camera] = min(first.get(o.camera, o.ended), o.ended)
            if set(first) == wanted:
                return max(first.values())
            time.sleep(0.05)
        return None

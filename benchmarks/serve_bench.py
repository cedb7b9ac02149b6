"""The served side of `serve_overhead.py`: the deployments it measures and the senders that load them.

`deploy` puts Stemcell, an empty echo deployment and (optionally) the plain-Serve peer on one local
Serve instance in one `serve.run_many` call, so their replicas start together (their start-ups
overlap instead of adding up), and registers the benchmark's cameras. `Bench` turns a mode
(direct executor calls, one JPEG per POST, a multipart batch) into a closed-loop sender for
`serve_load.closed_loop`. Both the main run and the HAProxy side process (`serve_haproxy.py`) use them.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import ray
import yaml
from ray import serve
from ray.actor import ActorHandle
from starlette.requests import Request

from stemcell.control.roles import executor_role
from stemcell.frame_stream import MEDIA_TYPE as FRAME_STREAM
from stemcell.frame_stream import encode_frames
from stemcell.package import load_package
from stemcell.serve_config import ServeConfig, load_serve_config

import plain_serve  # benchmarks/ is on sys.path when run as a script
from serve_load import Send, closed_loop, summarise

CAMERAS = 8
BATCH = 8
TOKEN_ENV = "STEMCELL_BENCH_ADMIN_TOKEN"
NAMESPACE = "stemcell-bench"
EXECUTOR = "stemcell-executor-0"


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Echo:
    """Reads the body and answers: Serve's own per-request cost, nothing else."""

    async def __call__(self, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}


REFUSED_PAUSE_S = 0.05  # a camera refused with Stemcell's 503 sends the frame again after this pause


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: HTTP {response.status_code} {response.text[:200]}")


@dataclass
class Bench:
    """What every measurement uses: the served app, its cameras' tokens, the load settings."""

    http: httpx.AsyncClient
    executor: ActorHandle
    tokens: dict[str, str]  # camera id -> its token
    input_size: int
    rounds: int
    warmup_s: float
    measure_s: float
    refused: int = 0  # Stemcell 503s met so far (each frame sent again: a frame counts once, when answered)

    async def rounds_of(self, modes: dict[str, Send]) -> dict[str, dict]:
        """Every mode once per round, the order rotated each round, so load changes hit all modes alike."""
        windows: dict[str, list[dict]] = {name: [] for name in modes}
        names = list(modes)
        for r in range(self.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                refused = self.refused
                before = await self.executor.stats.remote()
                w = await closed_loop(modes[name], CAMERAS, self.warmup_s, self.measure_s)
                after = await self.executor.stats.remote()  # frames per forward: how well requests coalesce
                w["executor_batch_frames"] = (after.frames - before.frames) / max(after.batches - before.batches, 1)
                windows[name].append(w)
                print(f"  round {r + 1}/{self.rounds} {name:24s} {w['fps']:8.1f} frames/s  {w['rps']:7.1f} req/s"
                      + (f"  ({self.refused - refused} refused with 503, sent again)" if self.refused > refused else ""),
                      flush=True)
        return {name: summarise(w) for name, w in windows.items()}

    async def _post(self, path: str, **kwargs: object) -> None:
        """POST until answered 200; Stemcell's own 503 (admission under overload) means: pause, send again."""
        while (r := await self.http.post(path, **kwargs)).status_code == 503 and "retry-after" in r.headers:  # type: ignore[arg-type]
            self.refused += 1
            await asyncio.sleep(REFUSED_PAUSE_S)
        _check(r)

    def direct(self, arrays: list[list[np.ndarray]], camera: str, per_call: int, *, preput: bool = False) -> Send:
        """Decoded frames straight to the executor actor, `per_call` per call, stacked and sent by the
        caller each time; with `preput` one stack (the first camera's) is put in the object store
        beforehand and every camera sends it, so what is measured is the executor alone, not this
        client copying (8 frames at 1080p: 50 MB)."""
        stacks = [[np.stack([cam[(i * per_call + k) % len(cam)] for k in range(per_call)])
                   for i in range(1 if preput else len(cam))] for cam in (arrays[:1] if preput else arrays)]
        stacks = [[ray.put(stacks[0][0])]] * len(arrays) if preput else stacks

        async def send(c: int, i: int) -> int:
            await self.executor.infer.remote(f"{camera}-{c}", stacks[c][i % len(stacks[c])])
            return per_call
        return send

    def single(self, jpegs: list[list[bytes]], camera: str, path: str = "/cameras/{camera}/frames") -> Send:
        """One JPEG per POST to `path` (a camera's frames route, or another deployment's)."""
        async def send(c: int, i: int) -> int:
            cam = f"{camera}-{c}"
            await self._post(path.format(camera=cam), content=jpegs[c][i % len(jpegs[c])],
                             headers={"Authorization": f"Bearer {self.tokens.get(cam, '')}", "Content-Type": "image/jpeg"})
            return 1
        return send

    def batch(self, jpegs: list[list[bytes]], camera: str, *, stream: bool = False) -> Send:
        """BATCH JPEGs per `frames:batch` POST: multipart, or with `stream` the length-prefixed
        `application/octet-stream` body (`stemcell.frame_stream`), built beforehand like the JPEGs."""
        def images(c: int, i: int) -> list[bytes]:
            return [jpegs[c][(i * BATCH + k) % len(jpegs[c])] for k in range(BATCH)]
        bodies = [[encode_frames(images(c, i)) for i in range(len(cam))] for c, cam in enumerate(jpegs)]

        async def send(c: int, i: int) -> int:
            cam = f"{camera}-{c}"
            auth = {"Authorization": f"Bearer {self.tokens[cam]}"}
            if stream:
                await self._post(f"/cameras/{cam}/frames:batch", content=bodies[c][i % len(bodies[c])],
                                 headers={**auth, "Content-Type": FRAME_STREAM})
            else:
                files = [("frames", (f"{k}.jpg", jpeg, "image/jpeg")) for k, jpeg in enumerate(images(c, i))]
                await self._post(f"/cameras/{cam}/frames:batch", files=files, headers=auth)
            return BATCH
        return send


def http_client(url: str) -> httpx.AsyncClient:
    """The cameras' client: one keep-alive connection per camera (and spares)."""
    limits = httpx.Limits(max_connections=2 * CAMERAS, max_keepalive_connections=2 * CAMERAS)
    return httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits)


def bench(http: httpx.AsyncClient, tokens: dict[str, str], package: Path, rounds: int, warmup_s: float,
          measure_s: float) -> Bench:
    executor = ray.get_actor(EXECUTOR, namespace=NAMESPACE)
    return Bench(http, executor, tokens, load_package(package).manifest.base.input_size, rounds, warmup_s, measure_s)


_PRESTARTED: list[ActorHandle] = []  # held for the session: Ray reclaims a non-detached actor once no handle is left


def _prestart(config: ServeConfig) -> None:
    """Start the actors the ingress replica creates one after another in its `__init__` (state store,
    executors, event hub) now, while Serve's controller and proxy start: the same names and options,
    so the replica finds them (`get_if_exists`) instead of waiting for each process in turn."""
    from actors.event_hub import start_event_hub
    from actors.routed_executor import start_executor
    from actors.state_store import get_or_create_state_store

    ex = config.executors
    _PRESTARTED.append(get_or_create_state_store(str(config.state_path), namespace=ex.namespace))
    _PRESTARTED.extend(start_executor(ex, str(config.package_dir), name=executor_role(ex.name_prefix, i),
                                      share=ex.num_gpus, get_if_exists=True) for i in range(ex.count))
    _PRESTARTED.append(start_event_hub(config))


def deploy(root: Path, package: Path, coalesce_ms: float, threads: int, *,
           peer: bool = True) -> tuple[str, dict[str, str]]:
    """Stemcell, the echo and (with `peer`) the plain-Serve peer on one Serve instance; 8 cameras with
    car + person (`bench-*`) and 8 with every app at the last branchpoint, the whole stem shared (`ten-*`)."""
    from ports import reserved_port, wait_listening

    from app.serve_app import build_app
    from stemcell.client import Admin

    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "package_dir": str(package), "state_path": str(root / "state.db"), "admin_token_env": TOKEN_ENV,
        "app_name": "stemcell-bench", "ingress": {"num_cpus": 0.5},
        "executors": {"num_cpus": threads, "namespace": NAMESPACE, "max_wait_ms": 2, "coalesce_ms": coalesce_ms},
    }))
    os.environ[TOKEN_ENV] = secrets.token_urlsafe(32)
    apps = [a["name"] for a in json.loads((package / "manifest.json").read_text())["apps"]]
    shared = load_package(package).base.num_segments  # every app only its head above the base
    ray.cloudpickle.register_pickle_by_value(plain_serve)  # the replica cannot import benchmarks/
    targets = [serve.RunTarget(build_app({"config_path": str(config)}), name="stemcell-bench", route_prefix="/"),
               serve.RunTarget(Echo.bind(), name="echo", route_prefix="/echo")]
    if peer:
        models = plain_serve.PlainModels.options(ray_actor_options={"num_cpus": threads})
        targets.append(serve.RunTarget(models.bind(str(package), [(a, shared) for a in apps], threads),
                                       name="plain", route_prefix="/plain"))
    started = time.perf_counter()
    _prestart(load_serve_config(config))
    with reserved_port() as port:  # held until Serve's proxy listens there (see benchmarks/ports.py)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve_started = time.perf_counter()
        serve.run_many(targets)  # all replicas start at once
        wait_listening(port)
    print(f"  deploy: Serve started in {serve_started - started:.1f} s, "
          f"apps in {time.perf_counter() - serve_started:.1f} s", flush=True)
    url = f"http://127.0.0.1:{port}"
    ten = [{"app": a, "branchpoint": shared} for a in apps]
    cameras = [{"camera_id": f"{kind}-{c}", "apps": kind_apps, "fps": 30}
               for c in range(CAMERAS) for kind, kind_apps in (("bench", ["car", "person"]), ("ten", ten))]
    with Admin(url, os.environ[TOKEN_ENV], timeout=120.0) as admin:  # one request, one plan: not 16
        added = admin.request("POST", "/admin/cameras:bulk", json={"cameras": cameras})["cameras"]
    return url, {a["camera_id"]: a["token"] for a in added}

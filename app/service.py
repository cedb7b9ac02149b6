"""What the HTTP routes do, without HTTP: cameras, apps, plan, frames, over the durable state and
the executors.  The ingress deployment parses requests, checks tokens and maps the exceptions
raised here onto status codes (`ValueError` -> 422, `LookupError` -> 404, `Conflict` -> 409,
`Overloaded` -> 503).

Write order for a camera: validate against the package -> executor -> durable state, so an
invalid request changes nothing and the store never holds a camera the executors refused.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray.actor import ActorHandle

from app.executors import ExecutorPool
from app.rolling import RollingWindow
from app.schemas import AddCamera
from stemcell.control.camera_plans import PlanHints, camera_plan, default_candidate, resolve_apps
from stemcell.control.contracts import AppRequest, AppRun, CameraSpec, Routes
from stemcell.control.placement import camera_slot
from stemcell.control.errors import UnknownCamera
from stemcell.control.roles import PLANNER_ACTOR
from stemcell.package.manifest import Manifest
from stemcell.package.store import MANIFEST
from stemcell.serve_config import ServeConfig
from stemcell.state import CAMERAS, PLANNER, new_token
from stemcell.state.records import CameraRecord

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The request is valid but contradicts how this server runs (HTTP 409)."""


def read_manifest(package_dir: Path) -> tuple[Manifest, str]:
    """Validated manifest and the sha256 of its bytes (which pins the exact candidate set)."""
    path = Path(package_dir) / MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{package_dir}: no readable {MANIFEST} (not an M-Package?)") from exc
    try:
        manifest = Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"{path}: invalid manifest: {str(exc).splitlines()[0]}") from exc
    return manifest, hashlib.sha256(raw).hexdigest()


async def read_routes(store: ActorHandle) -> Routes:
    """Which actor serves each role (executor slots, retraining workers), as the Planner published it
    (empty without a Planner)."""
    return await store.routes.remote()


class StemcellService:
    """One per ingress replica; the store actor and the executors are shared by all replicas."""

    def __init__(self, config: ServeConfig, store: ActorHandle, pool: ExecutorPool, manifest: Manifest,
                 manifest_sha256: str) -> None:
        self.config, self.store, self.pool = config, store, pool
        self.manifest, self.manifest_sha256 = manifest, manifest_sha256
        self.windows: dict[str, RollingWindow] = {}

    # ------------------------------------------------------------------ startup
    async def start(self) -> None:
        """Register the package's apps, then put every stored camera back on its executor."""
        for entry in self.manifest.apps:
            await self._put_app(entry.name, str(self.config.package_dir), self.manifest, self.manifest_sha256)
        restored, count = 0, self.config.executors.count
        for record in await self.store.list_cameras.remote():
            try:
                await self.pool.add_camera(CameraSpec.from_config(record.camera_id, record.config),
                                           camera_slot(record.camera_id, record.config, count))
                restored += 1
            except ValueError as exc:  # e.g. the package changed under a stored camera: keep serving the rest
                log.warning("camera %s not restored: %s", record.camera_id, exc)
        log.info("restored %d camera(s) from %s", restored, self.config.state_path)
        await self.save_plan()

    # ------------------------------------------------------------------ cameras
    async def camera_spec(self, camera_id: str) -> CameraSpec | None:
        """What a stored camera runs; None when it is not registered."""
        record = await self.store.get_camera.remote(camera_id)
        return None if record is None else CameraSpec.from_config(camera_id, record.config)

    @staticmethod
    def _wire_apps(apps: list[AppRun]) -> list[dict[str, Any]]:
        """The apps as the HTTP answer shows them (what the executor runs; pins are the store's)."""
        return [{"app": a.app, "branchpoint": a.branchpoint, "fps": a.fps} for a in apps]

    async def add_camera(self, body: AddCamera, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Register or reconfigure a camera; a new camera without a token gets a random one, unless it
        has a source (pulled cameras post nothing). `extra` is stored with the camera's config (a
        pulled camera's `source`, `enabled`, `ingest_actor`)."""
        existing = await self.store.get_camera.remote(body.camera_id)
        return (await self.add_cameras([(body, extra or {})], {body.camera_id: existing}))[0]

    async def add_cameras(self, cameras: list[tuple[AddCamera, Mapping[str, Any]]],
                          existing: Mapping[str, CameraRecord | None]) -> list[dict[str, Any]]:
        """`add_camera` for many (body, extra) at once: apps checked and the plan read once, the executors
        called concurrently on the slots the store placed them on, one store transaction with their plan
        entries (bulk registration). Pulled cameras get no token by default (they post no frames)."""
        await self._require_registered(sorted({a.app for body, _ in cameras for a in body.app_specs()}))
        own = await self.store.camera_plan_entries.remote([body.camera_id for body, _ in cameras])
        shared = await self.store.shared_branchpoints.remote()  # read O(these cameras), not the whole plan
        specs = []
        for body, _ in cameras:
            before = existing.get(body.camera_id)
            stream_fps = body.fps or (before.config.get("fps") if before else None) or self.config.default_fps
            requests = [AppRequest(a.app, a.branchpoint, a.fps, tuple(a.zones or ())) for a in body.app_specs()]
            apps = resolve_apps(self.manifest, requests, stream_fps, PlanHints(own.get(body.camera_id, {}), shared))
            specs.append(CameraSpec(body.camera_id, float(stream_fps), tuple(apps)))
        slots = await self.store.place_cameras.remote(specs)  # weighted, bounded: where each camera goes
        try:
            await asyncio.gather(*(self.pool.add_camera(spec, slots.get(spec.camera_id)) for spec in specs))
        except BaseException:  # ValueError here stores nothing; the reserved slots are given back
            await self.store.release_cameras.remote(list(slots))
            raise
        rows, answers = [], []
        for (body, extra), spec in zip(cameras, specs):
            before = existing.get(body.camera_id)
            keep = (before is not None and before.has_token) or body.source is not None
            token = body.token or (None if keep else new_token())
            rows.append((body.camera_id, spec.as_config() | dict(extra), token))  # pins kept for the Planner
            slot = slots.get(body.camera_id)
            executor = self.pool.name(self.pool.index_of(body.camera_id) if slot is None else slot)
            answers.append({"camera_id": body.camera_id, "token": token, "executor": executor,
                            "apps": self._wire_apps(list(spec.apps)), "input_size": self.input_size(body.camera_id)})
            log.info("camera %s %s on %s: %s", body.camera_id, "updated" if before else "added", executor, rows[-1][1])
        await self.store.put_cameras.remote(rows, self._camera_plans(specs))  # one commit, these cameras only
        return answers

    async def remove_camera(self, camera_id: str) -> dict[str, Any]:
        index = self.pool.index_of(camera_id)  # before the store forgets (and un-pushes) its slot
        if not await self.store.delete_camera.remote(camera_id):
            raise UnknownCamera(camera_id)
        await self.pool.remove_camera(camera_id, index)  # the store dropped its plan entry with it
        self.windows.pop(camera_id, None)
        log.info("camera %s removed", camera_id)
        return {"camera_id": camera_id, "removed": True}

    def input_size(self, camera_id: str) -> int:
        """The square side the camera's frames are analysed at: what its executor published, else the
        package's (the same until the executors reported). A client that sends frames this size
        (same resize rule, `stemcell.imaging.resize_frames`) uploads a few KB and saves the server the resize."""
        return self.pool.input_size(camera_id) or self.manifest.base.input_size

    async def camera_exists(self, camera_id: str) -> bool:
        return await self.store.get_camera.remote(camera_id) is not None

    async def status(self, camera_id: str) -> dict[str, Any]:
        record = await self.store.get_camera.remote(camera_id)
        if record is None:
            raise UnknownCamera(camera_id)
        camera = CameraSpec.from_config(camera_id, record.config)
        plan = camera_plan(self.manifest, camera)
        window = self.windows.get(camera_id)
        return {
            "camera_id": camera_id,
            "executor": self.pool.name(self.pool.index_of(camera_id)),
            "stream_fps": camera.stream_fps,
            "input_size": self.input_size(camera_id),
            "apps": [{"app": name, **entry} for name, entry in plan["apps"].items()],
            "requests": window.snapshot() if window else RollingWindow().snapshot(),
            "executor_stats": (await self.pool.stats(camera_id)).as_dict(),
        }

    # ------------------------------------------------------------------ frames
    async def infer(self, camera_id: str, frames: list, timestamps: list[float] | None,
                    frame_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Per frame its results as JSON (the HTTP edge: `FrameResult.as_dict`); `frame_size` (height,
        width) is the frames' size as the camera sent them, the pixels detect apps' boxes are served in."""
        started = time.perf_counter()
        results = await self.pool.infer(camera_id, frames, timestamps, frame_size)
        window = self.windows.get(camera_id)
        if window is None:
            window = self.windows[camera_id] = RollingWindow()
        window.add(len(frames), (time.perf_counter() - started) * 1000.0)
        return [r.as_dict() for r in results]

    # ------------------------------------------------------------------ apps and plan
    async def register_app(self, app: str, package_dir: str) -> dict[str, Any]:
        """A relative `package_dir` is taken from the config's `base_dir` (where serve.yaml's own relative
        paths were resolved), not from this replica's working folder."""
        package_dir = str(self.config.resolve(package_dir))
        manifest, sha = read_manifest(Path(package_dir))
        names = sorted(a.name for a in manifest.apps)
        if app not in names:
            raise ValueError(f"app {app!r} is not in the package at {package_dir} (it has {names})")
        if sha != self.manifest_sha256:
            raise Conflict(f"{package_dir} is not the package the executors serve ({self.config.package_dir}); "
                           "apps must come from that package to share its stem")
        return await self._put_app(app, package_dir, manifest, sha)

    async def _put_app(self, app: str, package_dir: str, manifest: Manifest, sha: str) -> dict[str, Any]:
        candidates = [{"branchpoint": c.branchpoint, "name": c.branchpoint_name, "f1": c.f1,
                       "precision": c.precision, "recall": c.recall} for c in manifest.candidates_for(app)]
        record = await self.store.put_app.remote(
            app, package_path=str(package_dir), manifest_sha256=sha,
            branchpoint=default_candidate(manifest, app).branchpoint_name, config={"candidates": candidates})
        return {"app": record.name, "package_dir": record.package_path, "manifest_sha256": record.manifest_sha256,
                "default_branchpoint": record.branchpoint, "candidates": candidates}

    async def _require_registered(self, apps: list[str]) -> None:
        registered = {a.name for a in await self.store.list_apps.remote() if a.camera_id is None}
        missing = sorted(set(apps) - registered)
        if missing:
            raise ValueError(f"app(s) {missing} not registered; registered: {sorted(registered)} (POST /admin/apps)")

    def _camera_plans(self, cameras: list[CameraSpec]) -> dict[str, Any]:
        """The plan entries of these cameras (one left out, logged, when the package no longer has its choice)."""
        out = {}
        for c in cameras:
            try:
                out[c.camera_id] = camera_plan(self.manifest, c)
            except ValueError as exc:
                log.warning("camera %s left out of the plan: %s", c.camera_id, exc)
        return out

    async def save_plan(self) -> None:
        """The plan's `cameras` section rebuilt from every stored camera (at start-up: the package may have
        changed); registrations write their own cameras' entries only. The Planner's section is kept."""
        cameras = [CameraSpec.from_config(c.camera_id, c.config) for c in await self.store.list_cameras.remote()]
        await self.store.save_plan_section.remote(CAMERAS, self._camera_plans(cameras))

    async def _live_planner_plan(self) -> dict[str, Any] | None:
        """The running Planner's own view (rounds, decision time, last switches); None without one."""
        try:
            planner = ray.get_actor(PLANNER_ACTOR, namespace=self.config.executors.namespace)
            return await asyncio.wait_for(planner.current_plan.remote(), 2.0)
        except Exception as exc:  # noqa: BLE001 - no Planner, or a busy/restarting one: show the stored plan
            log.debug("no live planner plan: %r", exc)
            return None

    async def plan(self) -> dict[str, Any]:
        """The saved plan; when a Planner runs, its `planner` section is the Planner's live view."""
        latest = await self.store.latest_plan.remote()
        out: dict[str, Any] = {"version": None, "created_at": None, "cameras": {}}
        if latest is not None:
            out |= {"version": latest.version, "created_at": latest.created_at, **latest.plan}
        live = await self._live_planner_plan()
        if live is not None:
            out[PLANNER] = {**live, "live": True}
        elif isinstance(out.get(PLANNER, {}).get("decision"), dict):  # its per-camera part is stored beside it
            out[PLANNER]["decision"]["cameras"] = dict(await self.store.decision_cameras.remote())
        return out

"""Pulled cameras and the fleet list, without HTTP: what `app.fleet_routes` calls.

A camera registered with a `source` is stored with it (plus `enabled` and the `ingest_actor` that
pulls it), then attached to that CameraIngest actor; the actor re-attaches it from the store after a
restart. Actors are filled in name order up to `ingest.cameras_per_actor` (the assignment is stored,
so it never moves while the fleet grows). Sources are checked here, before anything is stored:
an unsupported scheme is a `ValueError` (422), a file outside `ingest.allowed_dirs` a
`PermissionError` (403); an unreachable but well-formed source is accepted and shows `offline`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.camera_ingest import ingest_actor_name, start_ingest
from app.fleet_schemas import (
    AppOut,
    BulkCameras,
    CameraState,
    FleetCamera,
    FleetPage,
    PatchCamera,
)
from app.schemas import AddCamera, AppSpec, SourceBody
from app.service import StemcellService
from stemcell.control.contracts import CameraSpec
from stemcell.control.errors import UnknownCamera
from stemcell.ingest import HealthSnapshot, check_source
from stemcell.state.records import CameraRecord

log = logging.getLogger(__name__)
_FLEET_TIMEOUT_S = 3.0  # an ingest actor slower than this (restarting) shows its cameras as reconnecting


class FleetService:
    """One per ingress replica, beside `StemcellService` (whose store and executors it uses)."""

    def __init__(self, service: StemcellService) -> None:
        self.service = service
        self.config = service.config
        self._actors: dict[str, ActorHandle] = {}

    def _actor(self, name: str) -> ActorHandle:
        if name not in self._actors:
            self._actors[name] = start_ingest(self.config, name)
        return self._actors[name]

    async def start(self) -> None:
        """Make sure every ingest actor the store names runs (after a cluster restart they are gone)."""
        names = {r.config["ingest_actor"] for r in await self.service.store.list_cameras.remote()
                 if r.config.get("ingest_actor")}
        for name in sorted(names):
            self._actor(name)
        log.info("ingest actors: %s", sorted(names) or "none")

    # ------------------------------------------------------------------ registration
    def _source_config(self, source: SourceBody) -> dict[str, Any]:
        checked = check_source(source.url, self.config.ingest.allowed_dirs, fps=source.fps, transport=source.transport)
        return checked.as_config()

    def _assign(self, counts: Counter[str]) -> str:
        """The first ingest actor with room (counts are updated: bulk requests assign in memory)."""
        index = 0
        while counts[ingest_actor_name(self.config, index)] >= self.config.ingest.cameras_per_actor:
            index += 1
        name = ingest_actor_name(self.config, index)
        counts[name] += 1
        return name

    @staticmethod
    def _count(records: Iterable[CameraRecord]) -> Counter[str]:
        """Cameras per ingest actor."""
        return Counter(r.config["ingest_actor"] for r in records if r.config.get("ingest_actor"))

    async def _counts(self) -> Counter[str]:
        return self._count(await self.service.store.list_cameras.remote())

    def _extra(self, body: AddCamera, existing: CameraRecord | None, counts: Counter[str]) -> dict[str, Any]:
        """What a camera stores besides its apps: `enabled`, and for a pulled one its checked source and
        ingest actor (kept when it has one; a disabled camera takes no reader slot until enabled)."""
        extra: dict[str, Any] = {"enabled": body.enabled}
        if body.learning is not None:  # live continual learning (stemcell.learning.live.learning_apps)
            extra["learning"] = body.learning
        if body.source is not None:
            actor = existing.config.get("ingest_actor") if existing is not None else None
            if actor is None and body.enabled:
                actor = self._assign(counts)
            extra |= {"source": self._source_config(body.source), "ingest_actor": actor}
        return extra

    async def _register(self, bodies: list[AddCamera], existing: dict[str, CameraRecord | None],
                        counts: Counter[str]) -> list[dict[str, Any]]:
        """Store the cameras (one plan), then attach or detach each one's stream."""
        extras = [self._extra(b, existing.get(b.camera_id), counts) for b in bodies]
        added = await self.service.add_cameras(list(zip(bodies, extras)), existing)
        await asyncio.gather(*(self._sync_ingest(b.camera_id, existing.get(b.camera_id), x)
                               for b, x in zip(bodies, extras)))
        return added

    async def _sync_ingest(self, camera_id: str, existing: CameraRecord | None, extra: dict[str, Any]) -> None:
        """Attach the camera to its ingest actor, or detach it from the one that pulled it before."""
        before = existing.config.get("ingest_actor") if existing is not None else None
        if before and before != extra.get("ingest_actor"):
            await self._actor(before).detach.remote(camera_id)
        if extra.get("ingest_actor"):
            record = await self.service.store.get_camera.remote(camera_id)
            await self._actor(extra["ingest_actor"]).attach.remote(camera_id, dict(record.config))

    async def add(self, body: AddCamera) -> dict[str, Any]:
        """`POST /admin/cameras`: register or replace one camera."""
        existing = await self.service.store.get_camera.remote(body.camera_id)
        return (await self._register([body], {body.camera_id: existing}, await self._counts()))[0]

    async def bulk(self, body: BulkCameras) -> dict[str, Any]:
        """`POST /admin/cameras:bulk`: every source checked first (nothing stored if one is refused),
        then all cameras registered at once (`StemcellService.add_cameras`: one plan)."""
        started = time.perf_counter()
        for cam in body.cameras:
            if cam.source is not None:
                try:
                    self._source_config(cam.source)
                except (ValueError, PermissionError) as exc:
                    raise type(exc)(f"camera {cam.camera_id}: {exc}") from exc
        records = {r.camera_id: r for r in await self.service.store.list_cameras.remote()}
        existing = {c.camera_id: records.get(c.camera_id) for c in body.cameras}
        added = await self._register(body.cameras, existing, self._count(records.values()))
        return {"cameras": added, "seconds": time.perf_counter() - started}

    async def patch(self, camera_id: str, body: PatchCamera) -> dict[str, Any]:
        """`PATCH /admin/cameras/{id}`: the stored camera with the given fields replaced."""
        record = await self.service.store.get_camera.remote(camera_id)
        if record is None:
            raise UnknownCamera(camera_id)
        spec = CameraSpec.from_config(camera_id, record.config)
        apps = body.apps if body.apps is not None else [
            AppSpec(app=a.app, branchpoint=a.branchpoint if a.pinned else None, fps=a.fps if a.pinned else None)
            for a in spec.apps]
        stored = record.config.get("source")
        source = body.source if body.source is not None else (SourceBody(**stored) if stored else None)
        enabled = body.enabled if body.enabled is not None else bool(record.config.get("enabled", True))
        merged = AddCamera(camera_id=camera_id, apps=apps, fps=body.fps or spec.stream_fps, source=source,
                           enabled=enabled)
        return (await self._register([merged], {camera_id: record}, await self._counts()))[0]

    async def remove(self, camera_id: str) -> dict[str, Any]:
        """`DELETE /admin/cameras/{id}`: stop pulling it too."""
        record = await self.service.store.get_camera.remote(camera_id)
        removed = await self.service.remove_camera(camera_id)
        if record is not None and record.config.get("ingest_actor"):
            await self._actor(record.config["ingest_actor"]).detach.remote(camera_id)
        return removed

    # ------------------------------------------------------------------ the fleet list
    async def _health(self, names: set[str]) -> dict[str, HealthSnapshot]:
        """Every named ingest actor's cameras; an actor that does not answer in time contributes none."""
        async def ask(name: str) -> Mapping[str, HealthSnapshot]:
            try:
                return await asyncio.wait_for(self._actor(name).fleet.remote(), _FLEET_TIMEOUT_S)
            except (asyncio.TimeoutError, ray.exceptions.RayError) as exc:
                log.warning("ingest actor %s did not answer: %r", name, exc)
                return {}

        merged: dict[str, HealthSnapshot] = {}
        for part in await asyncio.gather(*(ask(n) for n in sorted(names))):
            merged |= part
        return merged

    def _entry(self, record: CameraRecord, health: HealthSnapshot | None) -> FleetCamera:
        cfg = record.config
        pool = self.service.pool
        window = self.service.windows.get(record.camera_id)
        source = cfg.get("source")
        enabled = bool(cfg.get("enabled", True))
        state: CameraState = "push"
        if source:  # a pulled camera whose actor did not answer (restarting) is reconnecting
            state = "stopped" if not enabled else health.state if health is not None else "reconnecting"
        # a push camera's rate is what it posted to this replica (per replica, like /status)
        fps_push = window.snapshot()["fps"] if window is not None and not source else None
        return FleetCamera(
            camera_id=record.camera_id, state=state, source=SourceBody(**source) if source else None,
            enabled=enabled, fps=float(cfg["fps"]), last_frame_at=health.last_frame_at if health else None,
            fps_in=health.fps_in if health else fps_push, fps_analysed=health.fps_analysed if health else fps_push,
            frames_dropped=health.frames_dropped if health else 0, reconnects=health.reconnects if health else 0,
            last_error=health.last_error if health and source else None,
            executor=pool.name(pool.index_of(record.camera_id)), ingest_actor=cfg.get("ingest_actor"),
            apps=[AppOut(**a.as_dict()) for a in CameraSpec.from_config(record.camera_id, cfg).apps])

    async def list(self, state: CameraState | None, offset: int, limit: int) -> FleetPage:
        """`GET /admin/cameras`: cameras in id order, filtered by state, one page."""
        records = await self.service.store.list_cameras.remote()
        health = await self._health({r.config["ingest_actor"] for r in records if r.config.get("ingest_actor")})
        entries = [self._entry(r, health.get(r.camera_id)) for r in records]
        if state is not None:
            entries = [e for e in entries if e.state == state]
        return FleetPage(cameras=entries[offset:offset + limit], total=len(entries), offset=offset, limit=limit)

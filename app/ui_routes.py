"""The operator's page at `/ui` and the pictures it shows: camera snapshots, latest results, event snapshots.

A mixin of `app.serve_app.StemcellIngress` (Serve binds routes of every class in the ingress's MRO),
using its `_require_camera`, `_require_admin`, `latest` (`stemcell.latest_frames.LatestFrames`), `service.store`
and `config` (`events.snapshot_dir`, where event pictures are kept: read here from the ingress's node, so a
shared folder when the ingress and the events run on different nodes).
A pulled camera's frames are analysed in its `CameraIngest` actor, never here: for a camera this replica has
no frame of, the snapshot and latest routes ask the actor its stored config names (`ingest_actor`), which
keeps them the same way; an actor that does not answer within `INGEST_TIMEOUT_S` is a 503.
The page is three static files shipped in the package (`app/ui/`, package data): no CDN, no build
step. It logs in with the admin token kept in the tab's sessionStorage and calls the public JSON routes
with an `Authorization` header, so the token never appears in a URL (pictures are fetched the same way
and shown as blob URLs). A strict Content-Security-Policy allows only this origin's scripts and styles.
"""
# No `from __future__ import annotations`: FastAPI must resolve these annotations (see serve_app).
import asyncio
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import ray
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from ray.actor import ActorHandle

from stemcell.latest_frames import SNAPSHOT_SIDES, Snapshot

log = logging.getLogger(__name__)

router = APIRouter()
_JPEG = {200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, 304: {"description": "unchanged (If-None-Match)"}}
_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "views.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
EVENT_SNAPSHOT_MAX_BYTES = 8 * 1024 * 1024  # an event snapshot is a frame's JPEG: far below this
INGEST_TIMEOUT_S = 3.0  # a pulled camera's ingest actor slower than this (restarting, gone) -> 503
_INGEST_ACTORS: dict[tuple[str, str], ActorHandle] = {}  # (namespace, name) -> handle; dropped when it fails


def _ui_file(name: str) -> bytes:
    return resources.files("app").joinpath("ui", name).read_bytes()


def _jpeg(body: bytes, etag: str, cache: str) -> Response:
    return Response(body, media_type="image/jpeg", headers={"ETag": etag, "Cache-Control": cache,
                                                             "X-Content-Type-Options": "nosniff"})


def _if_none_match(request: Request) -> tuple[str, ...]:
    return tuple(t.strip() for t in request.headers.get("if-none-match", "").split(","))


def _not_modified(request: Request, etag: str) -> bool:
    return etag in _if_none_match(request)


class UiRoutes:
    """Routes only; the frames are kept by `LatestFrames`, the event pictures by `stemcell.events.SnapshotStore`."""

    @router.get("/cameras/{camera_id}/snapshot", tags=["cameras"], response_class=Response, responses={
        **_JPEG, 404: {"description": "no frame of this camera analysed yet"},
        503: {"description": "a pulled camera's ingest actor did not answer"}})
    async def snapshot(self, camera_id: str, request: Request, side: int = Query(
            640, ge=SNAPSHOT_SIDES[0], le=SNAPSHOT_SIDES[1], description="longest side in pixels (smaller frames "
            "are not enlarged)")) -> Response:
        """The camera's latest analysed frame as JPEG (camera or admin token); `ETag` + a 2 s private cache."""
        await self._require_camera(request, camera_id)
        etag = self.latest.etag(camera_id, side)
        shot: Snapshot | str | None = etag  # None, or the ETag alone when the client has it (304)
        if etag is None:  # none analysed here: a pulled camera's ingest actor may have one
            shot = await self._ask_ingest(camera_id, "snapshot", side, _if_none_match(request))
        elif not _not_modified(request, etag):
            shot = await asyncio.to_thread(self.latest.snapshot, camera_id, side)  # encoding stays off the loop
        if isinstance(shot, str):
            return Response(status_code=304, headers={"ETag": shot})
        if shot is None:  # none analysed yet, or the camera was removed meanwhile
            raise HTTPException(404, f"no frame of camera {camera_id!r} analysed yet")
        answer = _jpeg(shot.jpeg, shot.etag, "private, max-age=2")
        answer.headers["X-Frame-Ts"] = repr(shot.frame_ts)
        return answer

    @router.get("/cameras/{camera_id}/latest", tags=["cameras"])
    async def latest_result(self, camera_id: str, request: Request) -> dict[str, Any]:
        """The camera's latest analysed frame's answer (`frame_ts` null: none analysed yet, by this replica for a
        pushed camera, by its ingest actor for a pulled one)."""
        await self._require_camera(request, camera_id)
        answer = self.latest.latest(camera_id)
        if answer["frame_ts"] is None:
            answer = await self._ask_ingest(camera_id, "latest") or answer
        return answer

    async def _ask_ingest(self, camera_id: str, method: str, *args: Any) -> Any:
        """`method(camera_id, *args)` of the pulled camera's ingest actor; None for a pushed camera.

        An actor that is gone, restarting or slow is a 503 that says so (the page shows it), never a 500."""
        record = await self.service.store.get_camera.remote(camera_id)
        name = record.config.get("ingest_actor") if record is not None else None
        if not name:
            return None
        key = (self.config.executors.namespace, name)
        try:
            if key not in _INGEST_ACTORS:
                _INGEST_ACTORS[key] = await asyncio.to_thread(ray.get_actor, name, namespace=key[0])
            return await asyncio.wait_for(getattr(_INGEST_ACTORS[key], method).remote(camera_id, *args),
                                          INGEST_TIMEOUT_S)
        except (asyncio.TimeoutError, ValueError, ray.exceptions.RayError) as exc:
            _INGEST_ACTORS.pop(key, None)  # looked up afresh next time (it may have been re-created)
            log.warning("ingest actor %s did not answer for camera %s: %r", name, camera_id, exc)
            raise HTTPException(503, f"the ingest actor {name!r} of camera {camera_id!r} did not answer "
                                     f"({type(exc).__name__}); try again shortly") from exc

    @router.get("/admin/events/{event_id}/snapshot", tags=["events"], response_class=Response, responses={
        **_JPEG, 404: {"description": "no snapshot kept for this event (none taken, pruned, or another node's disk)"}})
    async def event_snapshot(self, event_id: str, request: Request) -> Response:
        """The JPEG taken at the event's start (admin; `events.snapshot_dir`); it never changes, so it is cached."""
        self._require_admin(request)
        folder = self.config.events.snapshot_dir
        if folder is None:
            raise HTTPException(404, "event snapshots are off on this server (events.snapshot_dir)")
        if not event_id.isalnum():  # ids are hex: nothing that could leave the folder
            raise HTTPException(422, f"bad event id {event_id!r}")
        path = Path(folder) / f"{event_id}.jpg"  # `stemcell.events.SnapshotStore`'s name for it
        etag = f'"{event_id}"'
        if _not_modified(request, etag):
            return Response(status_code=304, headers={"ETag": etag})
        try:
            body = await asyncio.to_thread(_read_capped, path, EVENT_SNAPSHOT_MAX_BYTES)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no snapshot kept for event {event_id!r}") from exc
        return _jpeg(body, etag, "private, max-age=86400, immutable")

    @router.get("/ui", include_in_schema=False)
    async def ui_root(self) -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)  # relative: works under any route_prefix

    @router.get("/ui/", include_in_schema=False)
    async def ui_index(self) -> Response:
        return await self.ui_file("index.html")

    @router.get("/ui/{name}", include_in_schema=False)
    async def ui_file(self, name: str) -> Response:
        """One of the page's files (a fixed list: nothing else of the package is reachable)."""
        if name not in _FILES:
            raise HTTPException(404, f"no file {name!r} in the page")
        return Response(_ui_file(name), media_type=_FILES[name], headers=_PAGE_HEADERS)


def _read_capped(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        body = f.read(limit + 1)
    if len(body) > limit:
        raise HTTPException(413, f"snapshot over {limit} bytes")
    return body

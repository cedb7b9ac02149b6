"""The fleet routes: list, patch and bulk-register cameras (admin token).

A mixin of `app.serve_app.StemcellIngress`: Serve's ingress binds routes of every class in the
ingress's MRO, so these live here (with their own router, included into the app) and use the
ingress's `_require_admin`, `_call` and `fleet` (`app.ingest_service.FleetService`).
"""
# No `from __future__ import annotations`: FastAPI must resolve these annotations (see serve_app).
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from app.fleet_schemas import (
    MAX_BULK,
    BulkAdded,
    BulkCameras,
    CameraState,
    FleetPage,
    PatchCamera,
)
from app.images import json_body, openapi_json_body
from app.schemas import CameraAdded
from stemcell.state import validate_id

router = APIRouter(tags=["admin"])
_BULK_BODY_LIMIT = MAX_BULK * 2048  # a camera's JSON entry is a few hundred bytes


class FleetRoutes:
    """Routes only; `FleetService` does the work."""

    @router.get("/admin/cameras", response_model=FleetPage)
    async def list_cameras(self, request: Request, state: CameraState | None = Query(None, description="only these"),
                           offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_BULK)) -> Any:
        """Every camera (id order, paginated): state, last frame, fps in and analysed, drops, reconnects, last error."""
        self._require_admin(request)
        return await self._call(self.fleet.list(state, offset, limit))

    @router.patch("/admin/cameras/{camera_id}", response_model=CameraAdded,
                  openapi_extra=openapi_json_body(PatchCamera))
    async def patch_camera(self, camera_id: str, request: Request) -> Any:
        """Change a camera's apps, fps, source or enabled; the fields not given keep their values."""
        self._require_admin(request)
        body = await json_body(request, PatchCamera)
        try:
            validate_id("camera_id", camera_id)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return await self._call(self.fleet.patch(camera_id, body))

    @router.post("/admin/cameras:bulk", status_code=201, response_model=BulkAdded,
                 openapi_extra=openapi_json_body(BulkCameras))
    async def bulk_cameras(self, request: Request) -> Any:
        """Register or update up to 1,000 cameras (the `POST /admin/cameras` body each) and plan once.
        A duplicate camera id, or one refused source, refuses the whole request."""
        self._require_admin(request)
        body = await json_body(request, BulkCameras, limit=_BULK_BODY_LIMIT)
        return await self._call(self.fleet.bulk(body))


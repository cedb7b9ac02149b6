"""Bodies of the fleet routes (`GET/PATCH /admin/cameras`, `POST /admin/cameras:bulk`), as `/docs` shows them."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.schemas import AddCamera, AppSpec, CameraAdded, SourceBody, _Body

CameraState = Literal["streaming", "reconnecting", "offline", "push", "stopped"]
MAX_BULK = 1000


class AppOut(BaseModel):
    app: str
    branchpoint: int
    fps: float
    pinned: bool


class FleetCamera(BaseModel):
    camera_id: str
    state: CameraState = Field(description="push: the camera posts frames itself; the others are pulled cameras")
    source: SourceBody | None
    enabled: bool
    fps: float = Field(description="the camera's stream rate (each app analyses at its own fps, at most this)")
    last_frame_at: float | None = Field(description="wall-clock seconds of the newest frame read (pulled cameras)")
    fps_in: float | None = Field(description="frames/s read from the source over the last 5 s")
    fps_analysed: float | None = Field(description="frames/s the executor analysed over the last 5 s")
    frames_dropped: int = Field(description="frames replaced by a newer one before analysis")
    reconnects: int
    last_error: str | None
    executor: str
    ingest_actor: str | None
    apps: list[AppOut]


class FleetPage(BaseModel):
    cameras: list[FleetCamera]
    total: int = Field(description="cameras matching the filter, over all pages")
    offset: int
    limit: int


class PatchCamera(_Body):
    """Only the fields given change."""

    apps: list[AppSpec | str] | None = Field(None, min_length=1, max_length=64)
    fps: float | None = Field(None, gt=0, le=120)
    source: SourceBody | None = None
    enabled: bool | None = None


class BulkCameras(_Body):
    cameras: list[AddCamera] = Field(min_length=1, max_length=MAX_BULK)

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: list[AddCamera]) -> list[AddCamera]:
        seen: set[str] = set()
        for c in cameras:
            if c.camera_id in seen:
                raise ValueError(f"duplicate camera_id {c.camera_id!r} in the request")
            seen.add(c.camera_id)
        return cameras


class BulkAdded(BaseModel):
    cameras: list[CameraAdded]
    seconds: float = Field(description="server time for the whole request")

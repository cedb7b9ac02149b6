"""Request and response bodies of the HTTP API (they are what `/docs` shows)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stemcell.state import validate_id
from stemcell.state.tokens import MAX_TOKEN_CHARS, MIN_TOKEN_CHARS

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppSpec(_Body):
    app: str = Field(pattern=_ID, description="app name from the M-Package")
    branchpoint: int | None = Field(None, ge=0, description="shared segments; omitted = from the current plan")
    fps: float | None = Field(None, gt=0, le=120, description="frames/s this app analyses; omitted = plan or stream rate")
    zones: list[list[list[float]]] | None = Field(None, max_length=32, description="detect apps: polygons of [x, y] "
                                                  "frame pixels; counts and events use boxes whose bottom-centre is in one")


class SourceBody(_Body):
    """Where the server pulls the camera's frames from (README "Cameras pulled by the server")."""

    url: str = Field(min_length=1, max_length=4096, description="rtsp(s)://, http(s):// (MJPEG or any stream FFmpeg "
                     "reads), or an absolute file path under ingest.allowed_dirs (looped)")
    fps: float | None = Field(None, gt=0, le=120, description="frames/s to analyse; omitted = the camera's fps")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")


class AddCamera(_Body):
    camera_id: str = Field(pattern=_ID)
    apps: list[AppSpec | str] = Field(min_length=1, max_length=64, description="app specs, or just app names")
    fps: float | None = Field(None, gt=0, le=120, description="the camera's stream rate; omitted = server default")
    token: str | None = Field(None, min_length=MIN_TOKEN_CHARS, max_length=MAX_TOKEN_CHARS,
                              description="the camera's bearer token; omitted = a random one is generated "
                              "(none for a new camera with a source: pulled cameras do not post frames)")
    source: SourceBody | None = Field(None, description="pull the frames from here; omitted = the camera posts them")
    enabled: bool = Field(True, description="false: registered but not pulled (state `stopped`)")
    learning: bool | list[str] | None = Field(None, description="learn from this camera's frames: true, false, or "
                                              "the apps that learn; omitted = serve.yaml's learning.live")

    @field_validator("apps")
    @classmethod
    def _names(cls, apps: list[AppSpec | str]) -> list[AppSpec | str]:
        for a in apps:
            if isinstance(a, str):
                validate_id("app name", a)
        return apps

    def app_specs(self) -> list[AppSpec]:
        return [AppSpec(app=a) if isinstance(a, str) else a for a in self.apps]


class CameraAdded(BaseModel):
    camera_id: str
    token: str | None = Field(description="shown once, at creation or rotation; null when the token is unchanged")
    executor: str
    apps: list[dict[str, Any]]
    input_size: int = Field(description="square side the camera's frames are analysed at: send frames resized to it")


class RegisterApp(_Body):
    app: str = Field(pattern=_ID)
    package_dir: str = Field(min_length=1, max_length=4096)


class AppResult(BaseModel):
    app: str
    label: bool
    score: float
    event_active: bool
    fresh: bool = Field(description="computed on this frame; false: repeated from the app's last analysed frame "
                        "(the app runs at a lower frame rate than the camera)")
    count: int | None = Field(None, description="count apps: objects counted; event_active is count >= min_count")
    boxes: list[dict[str, Any]] | None = Field(None, description="detect apps: [{x0, y0, x1, y1, score, class}] "
                                             "in the frame's own pixels")
    counts: dict[str, int] | None = Field(None, description="detect apps: objects per class (in the app's zones, if any)")


class FrameResult(BaseModel):
    camera_id: str
    frame_ts: float
    results: list[AppResult]
    model_versions: dict[str, int]


class BatchResult(BaseModel):
    camera_id: str
    frames: list[FrameResult]


class CameraRemoved(BaseModel):
    camera_id: str
    removed: bool


class AppRegistered(BaseModel):
    app: str
    package_dir: str = Field(description="absolute: a relative path is taken from the config's base_dir")
    manifest_sha256: str
    default_branchpoint: str
    candidates: list[dict[str, Any]] = Field(description="per branchpoint: name, f1, precision, recall")


class CameraStatus(BaseModel):
    camera_id: str
    executor: str
    stream_fps: float
    input_size: int = Field(description="square side the camera's frames are analysed at: send frames resized to it")
    apps: list[dict[str, Any]] = Field(description="per app: branchpoint, fps, validation and modelled event F1")
    requests: dict[str, float | int | None] = Field(description="this replica's window: fps, p50_ms, p99_ms, frames_total")
    executor_stats: dict[str, Any] = Field(description="the executor's counters (ExecutorStats)")
    learning: dict[str, Any] | None = Field(None, description="live continual learning: samples buffered, last update, "
                                            "version, agreement with the teacher now and at version 0, zoo expert, "
                                            "models kept back, agreement history (null: the camera does not learn)")


class PlanView(BaseModel):
    model_config = ConfigDict(extra="allow")  # further sections of the saved plan are passed through
    version: int | None
    created_at: float | None
    cameras: dict[str, Any] = Field(description="per camera, per app: branchpoint, fps, F1s")
    planner: dict[str, Any] | None = Field(None, description="the Planner's section (its live view when it runs)")


class Readiness(BaseModel):
    ready: bool
    executors: list[dict[str, Any]] | None = Field(None, description="each executor's name and camera count (ready)")
    reason: str | None = Field(None, description="why not ready (503)")

"""The shapes that cross actor calls and the StateStore: one frozen type per concept.

Why one module: "an app running on a camera" used to exist as six types and travel as a dict read
by key in a dozen files; here it is `AppRun`, a camera is `CameraSpec`, and what executors,
retraining workers and the Planner report are typed too. The HTTP pydantic models (app/schemas.py)
stay the wire format and are converted once, at the HTTP edge; the StateStore keeps JSON on disk
and converts with `CameraSpec.from_config` / `as_config`. Imports nothing (every layer may use it).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# A stored camera config is this JSON: {"fps": 10.0, "apps": [{"app", "branchpoint", "fps", "pinned"}]}
CameraConfig = Mapping[str, Any]


@dataclass(frozen=True)
class AppRequest:
    """One app as an admin asked for it; None means 'decide for me' (`camera_plans.resolve_apps`)."""

    app: str  # app name in the package
    branchpoint: int | None = None  # asked branchpoint, else the plan's or the default candidate's
    fps: float | None = None  # asked frame rate, else the plan's or the stream's
    zones: tuple[Sequence[Sequence[float]], ...] = ()  # detect apps: polygons of [x, y] frame pixels (unchecked)


@dataclass(frozen=True)
class AppRun:
    """One app as a camera runs it: at a branchpoint and a frame rate."""

    app: str  # app name in the package
    branchpoint: int  # frozen shared segments of the chosen candidate (0..S)
    fps: float  # frames per second the app analyses
    pinned: bool = False  # set explicitly by an admin: the Planner never moves it
    # detect apps: polygons of (x, y) frame pixels; counts and events use boxes whose bottom-centre is in one
    zones: tuple[tuple[tuple[float, float], ...], ...] = ()

    @classmethod
    def parse(cls, raw: AppRun | Mapping[str, Any]) -> AppRun:
        """From a stored/JSON app entry; entries stored before pins were recorded count as unpinned."""
        if isinstance(raw, AppRun):
            return raw
        try:
            zones = tuple(tuple((float(x), float(y)) for x, y in zone) for zone in raw.get("zones") or ())
            return cls(str(raw["app"]), int(raw["branchpoint"]), float(raw["fps"]), bool(raw.get("pinned", False)), zones)
        except KeyError as exc:
            raise ValueError(f"app config {dict(raw)} lacks {exc.args[0]!r} (needs app, branchpoint, fps)") from exc

    def same_choice(self, branchpoint: int, fps: float) -> bool:
        return self.branchpoint == branchpoint and math.isclose(self.fps, fps, rel_tol=1e-9, abs_tol=1e-9)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (stored configs, HTTP answers); `zones` only when the app has some."""
        out = asdict(self)
        if not self.zones:
            del out["zones"]
        return out


@dataclass(frozen=True)
class CameraSpec:
    """What a camera runs: its stream rate and its apps, in the stored order."""

    camera_id: str
    stream_fps: float  # frames per second the camera sends
    apps: tuple[AppRun, ...]

    @classmethod
    def from_config(cls, camera_id: str, config: CameraConfig) -> CameraSpec:
        return cls(camera_id, float(config["fps"]), tuple(AppRun.parse(a) for a in config.get("apps", [])))

    def as_config(self) -> dict[str, Any]:
        """The stored JSON form (what `StateStore.put_camera` keeps)."""
        return {"fps": self.stream_fps, "apps": [a.as_dict() for a in self.apps]}


@dataclass(frozen=True)
class ServedApp:
    """One app as an executor serves it now."""

    app: str
    branchpoint: int
    fps: float
    stride: int  # analyses every `stride`-th frame of the stream
    version: int  # weights version (0: the package's candidate)


@dataclass(frozen=True)
class ExecutorReady:
    """A StemExecutor's answer once its models are loaded and warm (`ready()`)."""

    device: str  # "cuda" or "cpu"
    share: float  # GPU share it was created with
    threads: int  # torch CPU threads (its Ray CPU slots)
    input_size: int  # square input side its models take
    warm_up_s: float  # seconds of the warm-up forward
    execution: str = "fp32/torch"  # precision/backend that runs, after fallbacks (docs/gpu.md)


@dataclass(frozen=True)
class EngineStats:
    """An executor's TensorRT engines (`executors.backend: tensorrt`), in `ExecutorStats.engines`."""

    ready: int  # engines serving
    building: int  # builds or loads in flight
    failed: int  # segments whose build failed (they stay on torch)
    built: int  # builds done by this process
    loaded: int  # engines taken from the disk cache
    build_s: float  # total seconds spent building


@dataclass(frozen=True)
class SegmentLatency:
    """One stem-tree node's measured cost on an executor."""

    node: str  # tree node name
    segment: str  # base segment name ("conv4", ..., "head")
    users: tuple[str, ...]  # "camera/app" leaves sharing the node
    ewma_ms: float  # per batch
    ewma_ms_per_frame: float  # per frame (what the Planner's cost model uses)


@dataclass(frozen=True)
class ExecutorStats:
    """A StemExecutor's counters and measured per-segment latency (`stats()`)."""

    frames: int
    requests: int
    batches: int
    mean_batch_size: float
    queue_depth: int  # frames waiting for a batch now
    p50_ms: float
    p99_ms: float
    app_runs: int  # app executions (due on the frame)
    app_reuses: int  # results repeated from an app's last analysed frame
    segment_latency: tuple[SegmentLatency, ...] = ()
    engines: EngineStats | None = None  # None unless executors.backend is tensorrt (and CUDA + TensorRT are there)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryReport:
    """What the Planner needs of an executor's memory (`memory_report()`): a share is also a memory cap."""

    bytes_merged: int  # weights the stem tree stores after merging
    activation_peak: int  # activation bytes at the running batch size
    batch_size: int  # frames in the probe batch
    cuda_max_memory_allocated: int | None = None  # peak during the probe (weights included); None on CPU
    gpu_total_bytes: int | None = None  # the device's memory; None on CPU (no memory floor)
    details: Mapping[str, Any] = field(default_factory=dict)  # the full `sharing.MemoryReport` as JSON


@dataclass(frozen=True)
class JobStats:
    """One retraining job as its worker reports it."""

    job_id: str  # "camera/app"
    recent_gains: tuple[float, ...]  # accuracy gain per training phase (micro-window), oldest first
    updates: int  # training phases run
    drop: float | None = None  # deployed model's agreement drop with the teacher since its last update (slicing prior)


@dataclass(frozen=True)
class WorkerStats:
    """A retraining worker's jobs as the Planner's slicing sees them."""

    jobs: tuple[JobStats, ...] = ()


@dataclass(frozen=True)
class WorkerReady:
    """A RetrainWorker's answer once it runs (`ready()`)."""

    device: str  # where it trains: "cuda" or "cpu"
    share: float  # GPU share it was created with
    jobs: int  # (camera, app) retraining jobs it holds
    restored: int  # jobs it resumed from a checkpoint when it started
    config: Mapping[str, Any]  # the AMS settings it trains with (JSON)


@dataclass(frozen=True)
class EdgeAdvice:
    """What an edge should do next (AMS: adaptive sampling and update rates, the newest versions)."""

    sampling_fps: float  # frames per second to sample for the teacher
    t_update_s: float  # seconds between uploads / update checks
    versions: Mapping[str, int]  # app -> newest published model version
    accepted: int = 0  # samples of this upload taken (older than the newest are dropped)


@dataclass(frozen=True)
class UpdateMeta:
    """What an encoded model update takes an edge from and to."""

    version: int  # the version it brings the edge to
    base_version: int | None  # the version it applies on (None: a full update)
    kind: str  # "full", "sparse" or "merged"
    branchpoint: int  # the app's cut the update's tensors belong to


@dataclass(frozen=True)
class TeacherReady:
    """A TeacherLabeler's answer once its teacher is built (`ready()`)."""

    kind: str  # the teacher's registry kind
    device: str  # where it labels
    share: float  # its fixed GPU share (left out of what the Planner splits)
    classes: tuple[str, ...]  # the learners' classes this teacher can label


@dataclass(frozen=True)
class TeacherStats:
    """What a TeacherLabeler did so far (`stats()`): its cost in the GPU budget."""

    frames: int  # frames labelled
    seconds: float  # measured labelling seconds
    device: str
    share: float  # its fixed GPU share


@dataclass(frozen=True)
class Routes:
    """Which actor serves each role (executor slot, retraining worker) now, as the Planner published it."""

    actors: Mapping[str, str] = field(default_factory=dict)  # role -> actor name (unlisted: its generation 0)


@dataclass(frozen=True)
class ShareDecision:
    """A round's GPU shares: what each role should hold and what can be placed now."""

    target: Mapping[str, float]  # role -> share the round wants
    placeable: Mapping[str, float]  # role -> share make-before-break can place now (free GPU permitting)
    down: frozenset[str] = frozenset()  # roles whose actor waits for room (neither checkpointed nor drained)

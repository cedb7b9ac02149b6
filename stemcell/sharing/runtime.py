"""StemRuntime: serves many cameras' app sets from one M-Package through one stem tree.

Pure (no Ray): the StemExecutor actor is a thin shell over it. It adds to the tree:
- per-camera app sets that can be replaced live (only changed branches are loaded or unloaded);
- Mainstream frame-rate semantics: an app at f fps on an F fps stream analyses every round(F/f)-th
  frame of its camera and repeats its last result on the others;
- per-(camera, app) event state and model version, with an atomic weight swap;
- online per-node latency (EWMA), the measured cost the planner needs;
- the device path (`stemcell.accel.DevicePath`): precision, CUDA stream, pinned staging, engines.

Threading: `infer` and every commit hold one lock, so a forward always sees a consistent tree (old
or new weights, never a mix). Slow preparation (reading weights, hashing, copying to the GPU) runs
outside that lock, serialised by a second one, so reconfiguring does not stall inference. Frames
are turned into model input (resized with `stemcell.imaging.resize_frames` when not already at
`input_size`, normalised) before the lock is taken (a 1080p resize under it would serialise with every
forward); the ingress sends frames already at `input_size`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from stemcell.accel import DevicePath
from stemcell.control.contracts import AppRun, SegmentLatency, ServedApp
from stemcell.control.errors import UnknownCamera
from stemcell.models import to_input
from stemcell.models.readout import AppReading, read_output, sent_size
from stemcell.package import MPackage
from stemcell.sharing.memory import MemoryReport, memory_report
from stemcell.sharing.stem_tree import LeafKey, PreparedBranch, TreeNode
from stemcell.sharing.swapping import stem_tree_for

log = logging.getLogger(__name__)


def frame_stride(stream_fps: float, app_fps: float) -> int:
    """Every how many stream frames an app runs (Mainstream: 5 fps on a 10 fps stream -> 2)."""
    if app_fps <= 0 or stream_fps <= 0:
        raise ValueError(f"frame rates must be positive, got stream {stream_fps} app {app_fps}")
    return max(1, round(stream_fps / app_fps))


@dataclass(frozen=True)
class InferRequest:
    camera: str  # camera id
    frames: np.ndarray | torch.Tensor  # uint8 RGB (N,H,W,3) or one (H,W,3), best at input_size; or model input (N,3,S,S)
    timestamps: Sequence[float] | None = None  # one per frame; arrival wall time when absent
    frame_size: tuple[int, int] | None = None  # (height, width) as the camera sent them, when `frames` are resized

    @property
    def num_frames(self) -> int:
        return 1 if self.frames.ndim == 3 else len(self.frames)


@dataclass(frozen=True)
class AppResult:
    app: str
    label: bool  # presence: score >= threshold; count: count >= the app's min_count
    score: float  # sigmoid of the app's logit
    event_active: bool  # the app's event is on (its current label)
    fresh: bool  # computed on this frame (False: repeated from the app's last analysed frame)
    count: int | None = None  # count apps: objects counted (event_active = count >= the app's min_count)
    boxes: tuple[dict[str, object], ...] | None = None  # detect apps: [{x0, y0, x1, y1, score, class}], frame pixels
    counts: dict[str, int] | None = None  # detect apps: objects per class (in the app's zones, if any)

    def as_dict(self) -> dict[str, object]:  # asdict's recursive deep copy cost 0.44 ms CPU per 10-app frame
        return {"app": self.app, "label": self.label, "score": self.score, "event_active": self.event_active,
                "fresh": self.fresh, "count": self.count, "boxes": self.boxes and tuple(map(dict, self.boxes)),
                "counts": self.counts and dict(self.counts)}


@dataclass(frozen=True)
class FrameResult:
    frame_ts: float
    results: tuple[AppResult, ...]
    model_versions: Mapping[str, int]

    def as_dict(self) -> dict[str, object]:
        return {"frame_ts": self.frame_ts, "results": [r.as_dict() for r in self.results],
                "model_versions": dict(self.model_versions)}


@dataclass
class _Branch:
    """Mutable serving state of one (camera, app)."""

    config: AppRun
    stride: int
    version: int = 0  # 0 = the package's candidate; set_app_weights raises it
    next_due: int = 0  # camera frame index at which the app analyses next
    reading: AppReading = AppReading(score=0.0, label=False, count=None)  # its answer on its last analysed frame


@dataclass
class _Camera:
    stream_fps: float
    apps: dict[str, _Branch]
    frames_seen: int = 0


class StemRuntime:
    """All cameras of one executor, one stem tree, one device."""

    def __init__(
        self,
        package: MPackage,
        *,
        device: torch.device | str | None = None,
        path: DevicePath | None = None,
        threshold: float = 0.5,
        latency_alpha: float = 0.2,
        profile_every: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        weight_cap_bytes: int | None = None,  # weights past it stay on the host, swapped in per batch
    ) -> None:
        self.package = package
        self.path = path or DevicePath.create(device=device)  # precision, backend, stream, engines
        self.device = self.path.device
        self.tree = stem_tree_for(package.base.num_segments, self.path, weight_cap_bytes)
        self.input_size = package.manifest.base.input_size
        self.path.bind(package.base, self.input_size)
        self._normalization = package.manifest.base.normalization.model_dump()  # mean, std as trained
        self._tasks = {a.name: (a.task, a.min_count, tuple(a.classes)) for a in package.manifest.apps}
        self.threshold, self.latency_alpha = threshold, latency_alpha
        # Timing each node synchronises the GPU, so on CUDA only every 8th batch is measured.
        self.profile_every = profile_every or (8 if self.device.type == "cuda" else 1)
        self._wall_clock = wall_clock
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.RLock()  # tree + serving state vs inference
        self._mutate = threading.Lock()  # one reconfiguration at a time
        self._latency: dict[int, tuple[float, float]] = {}  # node uid -> EWMA (seconds, rows)
        self.counters = {"frames": 0, "batches": 0, "app_runs": 0, "app_reuses": 0}

    # -- configuration ----------------------------------------------------------------------------

    def set_camera(
        self, camera_id: str, apps: Sequence[AppRun | Mapping[str, object]], stream_fps: float | None = None
    ) -> bool:
        """Make `apps` the camera's app set; returns False when nothing changed (idempotent).

        Branches whose app and branchpoint are unchanged keep their weights, version and last result;
        only new or moved branches are loaded; dropped ones are unloaded.
        """
        # pins are the Planner's business: a pin change alone changes nothing served
        configs = [replace(AppRun.parse(a), pinned=False) for a in apps]
        stream = float(stream_fps or self.package.manifest.fps)
        self._validate(configs, stream)
        with self._mutate:
            current = self._cameras.get(camera_id)
            unchanged = current is not None and current.stream_fps == stream
            if unchanged and [b.config for b in current.apps.values()] == configs:  # type: ignore[union-attr]
                return False
            kept = {} if current is None else {a: b.config.branchpoint for a, b in current.apps.items()}
            loads = {
                c.app: self.tree.prepare(self.package.app_model(c.app, c.branchpoint))
                for c in configs
                if kept.get(c.app) != c.branchpoint
            }
            with self._lock:
                camera = self._cameras.setdefault(camera_id, _Camera(stream, {}))
                camera.stream_fps = stream
                for app in [a for a in camera.apps if a not in {c.app for c in configs}]:
                    self.tree.remove((camera_id, app))
                    del camera.apps[app]
                branches = {}
                for c in configs:
                    stride = frame_stride(stream, c.fps)
                    if c.app in loads:
                        self.tree.add((camera_id, c.app), loads[c.app])
                        branches[c.app] = _Branch(c, stride)
                    else:
                        branches[c.app] = camera.apps[c.app]
                        branches[c.app].config, branches[c.app].stride = c, stride
                camera.apps = branches
                self._tree_changed()
        log.info("camera %s: %s", camera_id, [(c.app, c.branchpoint, c.fps) for c in configs])
        return True

    def _validate(self, configs: Sequence[AppRun], stream_fps: float) -> None:
        names = [c.app for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"an app appears twice in {names}")
        manifest = self.package.manifest
        known = {a.name for a in manifest.apps}
        for c in configs:
            frame_stride(stream_fps, c.fps)
            if c.app not in known:
                raise ValueError(f"unknown app {c.app!r}; the package has {sorted(known)}")
            have = [e.branchpoint for e in manifest.candidates_for(c.app)]
            if c.branchpoint not in have:
                raise ValueError(f"app {c.app!r} has no candidate at branchpoint {c.branchpoint}; have {have}")

    def remove_camera(self, camera_id: str) -> bool:
        with self._mutate, self._lock:
            camera = self._cameras.pop(camera_id, None)
            if camera is None:
                return False
            for app in camera.apps:
                self.tree.remove((camera_id, app))
            self._tree_changed()
        return True

    def has_camera(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    def cameras(self) -> dict[str, tuple[ServedApp, ...]]:
        with self._lock:
            return {cam: tuple(ServedApp(b.config.app, b.config.branchpoint, b.config.fps, b.stride, b.version)
                               for b in c.apps.values()) for cam, c in self._cameras.items()}

    def set_app_weights(self, app: str, camera_id: str | None, state: Mapping[str, torch.Tensor], version: int,
                        merged: bool = False) -> int:
        """Swap an app's upper segments + head atomically on one camera (or all running it).

        Idempotent under retries: branches already at `version` or newer are left alone, except that
        `merged` weights (a joint merge of that version: same version, tied values) replace a branch
        at `version` itself; a later learner version replaces them as usual. Returns the
        number of branches swapped. Weights that do not fit the branch's branchpoint raise ValueError
        before anything changes.
        """
        with self._mutate:
            with self._lock:
                if camera_id is not None and camera_id not in self._cameras:
                    raise UnknownCamera(camera_id)
                targets = [(cam, c.apps[app].config.branchpoint) for cam, c in self._cameras.items()
                           if app in c.apps and camera_id in (None, cam)]
                if not targets:
                    raise ValueError(f"app {app!r} is not running on {camera_id or 'any camera'}")
                newest = version if merged else version - 1  # the newest version these weights replace
                targets = [(cam, b) for cam, b in targets if self._cameras[cam].apps[app].version <= newest]
            prepared = {b: self._prepare_weights(app, b, state) for b in {b for _, b in targets}}
            with self._lock:
                for cam, b in targets:
                    camera = self._cameras.get(cam)
                    if camera is None or app not in camera.apps or camera.apps[app].config.branchpoint != b:
                        continue  # reconfigured meanwhile: those weights no longer fit
                    self.tree.add((cam, app), prepared[b])
                    camera.apps[app].version = version
                self._tree_changed()
        return len(targets)

    def _prepare_weights(self, app: str, branchpoint: int, state: Mapping[str, torch.Tensor]) -> PreparedBranch:
        model = self.package.empty_app_model(app, branchpoint)
        try:
            model.load_trainable_state_dict(dict(state))
        except RuntimeError as exc:  # shape mismatch
            raise ValueError(f"weights do not fit branchpoint {branchpoint}: {exc}") from exc
        return self.tree.prepare(model.eval())

    # -- inference --------------------------------------------------------------------------------

    def infer(self, requests: Sequence[InferRequest]) -> list[list[FrameResult] | Exception]:
        """One tree forward over all requests' frames; per request its results, or the error that
        concerns only it (unknown camera, bad frames), so one bad request never fails a batch."""
        prepared = [self._input(req) for req in requests]  # resizing and normalising need no lock
        with self._lock:
            outcomes: list[list[FrameResult] | Exception] = []
            inputs: list[torch.Tensor] = []
            plans: list[tuple[_Camera, list[float], list[list[str]]] | None] = []
            rows: dict[LeafKey, list[int]] = {}
            offset = 0
            for req, x in zip(requests, prepared):
                try:
                    if isinstance(x, ValueError):
                        raise x
                    camera, stamps, due = self._plan(req, len(x))
                except (ValueError, UnknownCamera) as exc:
                    outcomes.append(exc)
                    plans.append(None)
                    continue
                outcomes.append([])
                plans.append((camera, stamps, due))
                needed = [j for j, apps in enumerate(due) if apps]
                inputs.append(x[needed])
                for k, j in enumerate(needed):
                    for app in due[j]:
                        rows.setdefault((req.camera, app), []).append(offset + k)
                offset += len(needed)
            logits = self._forward(inputs, rows)  # DeviceOutOfMemory (past the GPU share) fails this batch only
            cursor = dict.fromkeys(rows, 0)
            for req, plan, outcome in zip(requests, plans, outcomes):
                if plan is not None and isinstance(outcome, list):
                    outcome.extend(self._results(req.camera, *plan, logits, cursor, sent_size(req, self.input_size)))
            return outcomes

    def _input(self, req: InferRequest) -> torch.Tensor | ValueError:
        """The request's model input (N,3,S,S), or the error that its frames are not frames."""
        if isinstance(req.frames, torch.Tensor):
            return req.frames
        try:
            return to_input(req.frames, self.input_size, **self._normalization)
        except ValueError as exc:
            return exc

    def _plan(self, req: InferRequest, n: int) -> tuple[_Camera, list[float], list[list[str]]]:
        """Which apps analyse which of the request's `n` frames; advances the camera's frame counter."""
        camera = self._cameras.get(req.camera)
        if camera is None:
            raise UnknownCamera(req.camera)
        stamps = list(req.timestamps) if req.timestamps is not None else [self._wall_clock()] * n
        if len(stamps) != n:
            raise ValueError(f"{len(stamps)} timestamps for {n} frames")
        due: list[list[str]] = []
        for j in range(n):
            index = camera.frames_seen + j
            due.append([app for app, b in camera.apps.items() if index >= b.next_due])
            for app in due[-1]:
                camera.apps[app].next_due = index + camera.apps[app].stride
        camera.frames_seen += n
        return camera, stamps, due

    def _forward(self, inputs: list[torch.Tensor], rows: dict[LeafKey, list[int]]) -> dict[LeafKey, torch.Tensor]:
        if not rows:
            return {}
        self.counters["batches"] += 1
        profile = self.counters["batches"] % self.profile_every == 0
        return self.path.forward(self.tree, inputs, rows, self._observe if profile else None)

    def _results(
        self,
        camera_id: str,
        camera: _Camera,
        stamps: list[float],
        due: list[list[str]],
        logits: Mapping[LeafKey, torch.Tensor],
        cursor: dict[LeafKey, int],
        frame_size: tuple[int, int],
    ) -> list[FrameResult]:
        """Frame by frame, in order: fresh scores where due, the app's last result elsewhere."""
        out = []
        versions = {app: b.version for app, b in camera.apps.items()}
        for ts, due_apps in zip(stamps, due):
            results = []
            for app, branch in camera.apps.items():
                fresh = app in due_apps
                if fresh:
                    key = (camera_id, app)
                    branch.reading = read_output(*self._tasks[app], logits[key][cursor[key]], frame_size,
                                                 branch.config.zones, self.threshold)
                    cursor[key] += 1
                r = branch.reading
                results.append(AppResult(app, r.label, r.score, r.label, fresh, r.count, r.boxes, r.counts))
            self.counters["app_runs"] += len(due_apps)
            self.counters["app_reuses"] += len(camera.apps) - len(due_apps)
            out.append(FrameResult(ts, tuple(results), versions))
        self.counters["frames"] += len(stamps)
        return out

    # -- measurement ------------------------------------------------------------------------------

    def _observe(self, node: TreeNode, output: torch.Tensor, seconds: float) -> None:
        rows = float(len(output))
        old = self._latency.get(node.uid, (seconds, rows))
        a = self.latency_alpha
        self._latency[node.uid] = ((1 - a) * old[0] + a * seconds, (1 - a) * old[1] + a * rows)

    def _tree_changed(self) -> None:
        """Forget the latency of nodes that left the tree; ask for engines of segments that entered it."""
        nodes = list(self.tree.nodes())
        live = {n.uid for n in nodes}
        self._latency = {uid: v for uid, v in self._latency.items() if uid in live}
        self.path.segments_changed([(n.digest, n.module, n.depth) for n in nodes if n.depth < self.tree.num_segments])

    def segment_latency(self) -> list[SegmentLatency]:
        """Per tree node: measured EWMA ms per batch and per frame, and who shares it."""
        names = [b.removeprefix("after_") for b in self.package.base.branchpoints[1:]] + ["head"]
        with self._lock:
            out = []
            for node in self.tree.nodes():
                if node.uid not in self._latency:
                    continue
                seconds, rows = self._latency[node.uid]
                out.append(SegmentLatency(
                    node=node.name,
                    segment=names[node.depth],
                    users=tuple(sorted(f"{c}/{a}" for c, a in node.leaves)),
                    ewma_ms=1e3 * seconds,
                    ewma_ms_per_frame=1e3 * seconds / max(rows, 1.0),
                ))
            return out

    def memory_report(self, batch_size: int) -> MemoryReport:
        """Exact weight bytes merged vs not, and activations of a probe batch of `batch_size` frames
        split round-robin over the cameras (every app due on every frame: the worst case)."""
        base = self.package.manifest.base
        with self._lock:
            cameras = sorted({c for c, _ in self.tree.keys()}) or ["-"]
            rows = self.tree.rows_for_cameras([cameras[i % len(cameras)] for i in range(batch_size)])
            x = torch.zeros(batch_size, 3, self.input_size, self.input_size)
            return memory_report(self.tree, x, rows, base.segment_hashes, base.segment_params)

    def warm_up(self) -> float:
        """Run the base once on the device (CUDA context, kernel selection); returns seconds."""
        return self.path.warm_up(self.package.base, self.input_size)

"""The AMS server loop for many cameras (AMS Algorithm 1 + appendix E), without Ray.

Per camera a `CameraSession`: one sliding buffer of teacher-labelled samples (every app of the
camera trains on the same frames, on its own label column) and one ASR/ATR controller (the φ-score
is a property of the scene, not of an app). Per (camera, app) an `AppJob`: a `ContinualLearner`
(gradient-guided Adam, only above the branchpoint), the published update history and its costs.

`AmsTrainer` holds the sessions and serves due jobs *round-robin*, one retraining phase at a time
(AMS's multi-client server: one process touches the GPU at a time, each session gets one step
per turn). The clock is the samples' own timestamps (video time): a job is due once its camera's
newest sample is T_update past its last training, so the same code runs live (timestamps are wall
time) and in simulation. The RetrainWorker actor is a shell around this class.
"""
from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from stemcell.learning.buffer import BufferItem, SampleBuffer
from stemcell.learning.codec import SparseUpdate, catch_up_update, decode, encode
from stemcell.learning.coordinate_descent import Selection
from stemcell.learning.published import JobStats, Published, model_logits, payload_kind, stack_items  # noqa: F401 - payload_kind is re-exported (callers import it from here)
from stemcell.learning.rates import ASRState, ATRState, LabelledSample, RatesConfig, RatesState, rates_init
from stemcell.learning.rates import step as rates_step
from stemcell.learning.retrain import Batch, ContinualLearner, buffer_batches
from stemcell.learning.safety import holdout_count, safety_verdict
from stemcell.models import AppModel, segment_hash

CHECKPOINT_FORMAT = 1
JobKey = tuple[str, str]  # (camera id, app name)
# (camera, app, spec) -> a fresh app model (package candidate, stem shared): used to rebuild on resume
ModelFactory = Callable[[str, str, dict[str, Any]], AppModel]


@dataclass(frozen=True)
class AmsConfig:
    horizon_s: float = 240.0  # T_horizon: the buffer keeps this much video time
    iterations: int = 20  # K Adam steps per model update (one coordinate-descent phase)
    lr: float = 1e-3
    gamma: float | None = 0.05  # coordinates per phase; None = full-model Adam
    selection: Selection = "cumulative"
    batch_size: int = 16
    input_size: int | None = None  # model input resolution (None = the frames' own)
    mean: tuple[float, float, float] | None = None  # input normalisation as the package trained (None: ImageNet's)
    std: tuple[float, float, float] | None = None
    adaptive: bool = True  # ASR + ATR; False = `fixed_fps` and T_update = rates.atr.base_s
    fixed_fps: float = 1.0
    rates: RatesConfig = field(default_factory=RatesConfig)
    history: int = 32  # published updates kept per job, for merged catch-up updates
    safety_holdout: int = 0  # newest samples a retrained model must beat the deployed one on (0: no check)
    max_buffer: int = 4096  # samples per camera, whatever the rate
    seed: int = 0


class AppJob:
    """One app on one camera: its learner, its published versions and their costs."""

    def __init__(self, camera: str, app: str, model: AppModel, target: int, config: AmsConfig,
                 spec: dict[str, Any] | None = None) -> None:
        self.camera, self.app, self.target, self.config = camera, app, target, config
        self.spec = dict(spec or {})
        self.learner = ContinualLearner(model, lr=config.lr, gamma=config.gamma, phase_steps=config.iterations,
                                        selection=config.selection, seed=config.seed)
        self.history: dict[int, SparseUpdate] = {}
        self.encoded: dict[int, bytes] = {}
        self.last_trained_s: float | None = None
        self.stats = JobStats()
        # one mini-batch stream per job: a job's training does not depend on which others share the worker
        self.rng = np.random.default_rng([config.seed, zlib.crc32(camera.encode()), zlib.crc32(app.encode())])

    @property
    def version(self) -> int:
        return self.learner.version

    @property
    def branchpoint(self) -> int | None:
        """Where the app's stem ends: an edge holding another cut must rebuild its student."""
        return int(self.spec["branchpoint"]) if "branchpoint" in self.spec else None

    def succeed(self, previous: AppJob) -> None:
        """Take over from a job of the same (camera, app) whose spec (branchpoint) moved.

        The version continues past the old job's, and no history crosses over: an update can only
        patch the tensors it was computed on, so every edge catches up with a full update of the
        new layout. The camera's buffer is shared, so training resumes on the same samples.
        """
        self.learner.version = previous.version + 1

    def due(self, latest_s: float | None, oldest_s: float | None, t_update_s: float, slack_s: float = 0.0) -> bool:
        """T_update of new samples since the last phase. `slack_s` (one sampling interval) absorbs the
        jitter of sample times, so an upload every T_update is not skipped for being 0.3 s short."""
        if latest_s is None or oldest_s is None:
            return False
        since = self.last_trained_s if self.last_trained_s is not None else oldest_s
        return latest_s > since and latest_s - since >= t_update_s - slack_s

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Logits of the deployed model on uint8 frames (N,): what the executor would answer."""
        return model_logits(self.learner.model, frames, self.config)

    def adopt(self, weights: dict[str, torch.Tensor]) -> None:
        """Serve another model's trainable weights (a zoo expert) as a new version; no update history
        leads there, so edges catch up with a full update (as after `succeed`)."""
        self.learner.model.load_trainable_state_dict({k: v.to(self.learner.device) for k, v in weights.items()})
        self.learner.version += 1
        self.history, self.encoded = {}, {}

    def _score(self, items: list[BufferItem]) -> tuple[float, float] | None:
        """(accuracy, BCE loss) of the deployed model against the teacher's labels of this app's column,
        on buffered samples (None: none): the safety check's and the recent gains' measure."""
        stacked = stack_items(items)
        if stacked is None:
            return None
        logits, target = self.predict(stacked[0]), stacked[1][:, self.target] > 0.5
        loss = self.learner.loss_fn(torch.from_numpy(logits), torch.from_numpy(target.astype(np.float32)))
        return float(((logits > 0) == target).mean()), float(loss)

    def _batches(self, buffer: SampleBuffer, before_s: float | None) -> list[Batch]:
        """One phase's mini-batches from the buffer (samples older than `before_s` when given)."""
        return buffer_batches(buffer, count=self.config.iterations, batch_size=self.config.batch_size, rng=self.rng,
                              targets=[self.target], input_size=self.config.input_size, mean=self.config.mean,
                              std=self.config.std, before_s=before_s)

    def retrain(self, buffer: SampleBuffer) -> Published:
        """One phase of K steps on uniform mini-batches of the buffer; publish its sparse update,
        unless the safety check (`stemcell.learning.safety`) keeps the new model back."""
        started, cpu = time.perf_counter(), time.process_time()
        fresh_items = buffer.items(self.last_trained_s)
        before = self._score(fresh_items)
        held_items = fresh_items[len(fresh_items) - holdout_count(len(buffer), len(fresh_items), self.config.safety_holdout):]
        deployed = self._score(held_items)
        saved = copy.deepcopy(self.learner.state_dict()) if deployed is not None else None
        batches = self._batches(buffer, held_items[0].t_s if held_items else None)
        result = self.learner.retrain(batches, self.config.iterations)
        verdict = None
        new = self._score(held_items) if deployed is not None else None
        if deployed is not None and new is not None and saved is not None:
            verdict = safety_verdict(deployed[0], new[0], deployed[1], new[1], len(held_items))
            if not verdict.deploy:  # kept back: the phase never happened, as far as anyone serving knows
                self.learner.load_state_dict(saved)
                self.stats.kept_back += 1
        kept_back = verdict is not None and not verdict.deploy
        after = self._score(fresh_items)
        if not kept_back:
            self._remember(result.update, result.update_bytes)
        self.last_trained_s = buffer.latest_s
        published = Published(
            self.camera, self.app, self.version, float(buffer.latest_s or 0.0),
            0 if kept_back else len(result.update_bytes), 0.0 if kept_back else result.mask_fraction,
            result.loss_before, result.loss_after, None if before is None else before[0], None if after is None else after[0],
            time.perf_counter() - started, time.process_time() - cpu, kept_back, verdict)
        self._account(published)
        return published

    def _remember(self, update: SparseUpdate, payload: bytes) -> None:
        self.history[update.version] = update
        self.encoded[update.version] = payload
        for old in sorted(self.history)[: -self.config.history]:
            del self.history[old], self.encoded[old]

    def _account(self, p: Published) -> None:
        s = self.stats
        s.updates += int(not p.kept_back)
        s.wall_s += p.wall_s
        s.cpu_s += p.cpu_s
        if p.fresh_accuracy_before is not None and p.fresh_accuracy_after is not None:
            s.recent_gains = [*s.recent_gains, p.fresh_accuracy_after - p.fresh_accuracy_before][-8:]
        s.last = asdict(p)

    def update_since(self, edge_version: int | None) -> SparseUpdate | None:
        """What an edge at `edge_version` needs (None: up to date; merged or full otherwise)."""
        if edge_version == self.version:
            return None
        return catch_up_update(edge_version, self.history, self.learner.trainable_state(), version=self.version)

    def payload_since(self, edge_version: int | None) -> tuple[bytes, SparseUpdate] | None:
        """Encoded form of `update_since`; the exact published bytes when the edge missed just one."""
        update = self.update_since(edge_version)
        if update is None:
            return None
        if edge_version is not None and update.base_version == edge_version and update.version == edge_version + 1:
            return self.encoded[update.version], update
        return encode(update), update

    def restore_published(self, version: int, weights: dict[str, torch.Tensor], updates: dict[int, bytes],
                          last_trained_s: float | None) -> None:
        """Back to a durably stored version after a crash (optimiser moments start afresh)."""
        with torch.no_grad():
            for name, p in self.learner.named:
                p.copy_(weights[name])
        self.learner.version = version
        self.last_trained_s = last_trained_s
        self.history, self.encoded = {}, {}
        for v in sorted(updates):
            self._remember(decode(updates[v]), updates[v])

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "target": self.target, "last_trained_s": self.last_trained_s,
            "rng": self.rng.bit_generator.state,
            "learner": self.learner.state_dict(),
            "history": {str(v): torch.frombuffer(bytearray(b), dtype=torch.uint8) for v, b in self.encoded.items()},
            "stats": {"updates": self.stats.updates, "wall_s": self.stats.wall_s, "cpu_s": self.stats.cpu_s,
                      "recent_gains": list(self.stats.recent_gains), "kept_back": self.stats.kept_back},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        updates = {int(v): t.numpy().tobytes() for v, t in state["history"].items()}
        self.restore_published(self.version, self.learner.trainable_state(), updates, state["last_trained_s"])
        self.rng.bit_generator.state = state["rng"]
        st = state["stats"]
        self.stats = JobStats(int(st["updates"]), float(st["wall_s"]), float(st["cpu_s"]), list(st["recent_gains"]),
                              kept_back=int(st.get("kept_back", 0)))


class CameraSession:
    """One camera: shared sample buffer, ASR/ATR state, and one job per app."""

    def __init__(self, camera: str, config: AmsConfig) -> None:
        self.camera, self.config = camera, config
        self.buffer = SampleBuffer(horizon_s=config.horizon_s, max_items=config.max_buffer)
        self.rates: RatesState = rates_init(config.rates)
        self.jobs: dict[str, AppJob] = {}
        self.samples = 0

    @property
    def sampling_fps(self) -> float:
        return self.rates.asr.rate_fps if self.config.adaptive else self.config.fixed_fps

    @property
    def t_update_s(self) -> float:
        return self.rates.atr.t_update_s if self.config.adaptive else self.config.rates.atr.base_s

    def add_samples(self, t_s: np.ndarray, frames: np.ndarray, labels: np.ndarray,
                    boxes: Sequence[np.ndarray | None] | None = None) -> int:
        """Fold teacher-labelled samples in (time order); samples older than the newest are dropped.

        Dropping rather than failing keeps a retried upload (at-least-once delivery) harmless.
        `boxes`: per sample the teacher's boxes (detect apps learn from them), when it gives any.
        """
        accepted = 0
        for t, frame, y, found in zip(np.asarray(t_s, dtype=np.float64), frames, labels, boxes or [None] * len(frames)):
            if self.buffer.latest_s is not None and t <= self.buffer.latest_s:
                continue
            self.buffer.add(float(t), frame, y, boxes=found)
            if self.config.adaptive:
                self.rates = rates_step(self.rates, LabelledSample(float(t), tuple(float(v) for v in y)),
                                        self.config.rates)
            accepted += 1
        self.samples += accepted
        return accepted

    def due(self, app: str) -> bool:
        return self.jobs[app].due(self.buffer.latest_s, self.buffer.oldest_s, self.t_update_s, 1.0 / self.sampling_fps)

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.buffer.state_dict(),
            "rates": {"asr": asdict(self.rates.asr), "atr": asdict(self.rates.atr)},
            "samples": self.samples,
            "jobs": {app: job.state_dict() for app, job in self.jobs.items()},
        }

    def load_buffer_and_rates(self, state: dict[str, Any]) -> None:
        self.buffer = SampleBuffer(horizon_s=self.config.horizon_s, max_items=self.config.max_buffer)
        self.buffer.load_state_dict(state)
        asr = dict(state["rates"]["asr"])
        if asr["previous_labels"] is not None:
            asr["previous_labels"] = tuple(asr["previous_labels"])
        self.rates = RatesState(asr=ASRState(**asr), atr=ATRState(**state["rates"]["atr"]))
        self.samples = int(state["samples"])


class AmsTrainer:
    """All sessions of one retraining worker, served round-robin one phase at a time."""

    def __init__(self, config: AmsConfig = AmsConfig(), job_type: Callable[..., AppJob] | None = None) -> None:
        """`job_type(camera, app, model, target, config, spec)`: builds each job (default `AppJob`;
        `detect_learning.make_job` gives detect apps theirs)."""
        self.config = config
        self.job_type = job_type or AppJob
        self.sessions: dict[str, CameraSession] = {}
        self.order: list[JobKey] = []  # round-robin order (registration order)
        self.cursor = 0  # index in `order` where the next search for a due job starts

    def has_job(self, camera: str, app: str, spec: dict[str, Any] | None = None) -> bool:
        """Whether (camera, app) runs with this spec (then `add_job` would keep it as it is)."""
        job = self.sessions[camera].jobs.get(app) if camera in self.sessions else None
        return job is not None and (spec is None or job.spec == dict(spec))

    def add_job(self, camera: str, app: str, model: AppModel, target: int, spec: dict[str, Any] | None = None) -> AppJob:
        """Register (camera, app); re-registering with the same spec keeps the job (idempotent), with
        another spec (the Planner moved the app's branchpoint) replaces it (`AppJob.succeed`)."""
        session = self.sessions.setdefault(camera, CameraSession(camera, self.config))
        previous = session.jobs.get(app)
        if previous is None:
            self.order.append((camera, app))
        elif self.has_job(camera, app, spec):
            return previous
        job = session.jobs[app] = self.job_type(camera, app, model, target, self.config, spec)
        if previous is not None:
            job.succeed(previous)
        return job

    def remove_camera(self, camera: str) -> bool:
        if self.sessions.pop(camera, None) is None:
            return False
        self.order = [k for k in self.order if k[0] != camera]
        self.cursor = 0
        return True

    def job(self, camera: str, app: str) -> AppJob:
        try:
            return self.sessions[camera].jobs[app]
        except KeyError:
            raise KeyError(f"no retraining job for app {app!r} on camera {camera!r}") from None

    def session(self, camera: str) -> CameraSession:
        if camera not in self.sessions:
            raise KeyError(f"no retraining session for camera {camera!r}")
        return self.sessions[camera]

    def add_samples(self, camera: str, t_s: np.ndarray, frames: np.ndarray, labels: np.ndarray,
                    boxes: Sequence[np.ndarray | None] | None = None) -> dict[str, Any]:
        session = self.session(camera)
        accepted = session.add_samples(t_s, frames, labels, boxes)
        return {"accepted": accepted, **self.advice(camera)}

    def advice(self, camera: str) -> dict[str, Any]:
        """What the edge should do next: sampling rate, upload/update period, model versions."""
        s = self.session(camera)
        return {"sampling_fps": s.sampling_fps, "t_update_s": s.t_update_s,
                "versions": {app: job.version for app, job in s.jobs.items()}}

    def due(self) -> list[JobKey]:
        return [k for k in self.order if self.sessions[k[0]].due(k[1])]

    def run_next(self) -> Published | None:
        """Retrain the first due job at or after the cursor (round-robin); None when nothing is due."""
        n = len(self.order)
        for i in range(n):
            camera, app = self.order[(self.cursor + i) % n]
            session = self.sessions[camera]
            if session.due(app):
                self.cursor = (self.cursor + i + 1) % n
                return session.jobs[app].retrain(session.buffer)
        return None

    def run_pending(self) -> list[Published]:
        """One round: every job that is due now gets one phase, in round-robin order."""
        out = []
        for _ in range(len(self.order)):
            p = self.run_next()
            if p is None:
                break
            out.append(p)
        return out

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per job "camera/app": version, measured retraining seconds, recent accuracy gains, rates."""
        out = {}
        for camera, app in self.order:
            job, session = self.job(camera, app), self.sessions[camera]
            out[f"{camera}/{app}"] = {
                "camera": camera, "app": app, "version": job.version, "updates": job.stats.updates,
                "stem_hashes": [segment_hash(s) for s in job.learner.model.stem],  # proof the stem stays shared
                "wall_s": job.stats.wall_s, "cpu_s": job.stats.cpu_s, "recent_gains": list(job.stats.recent_gains),
                "sampling_fps": session.sampling_fps, "t_update_s": session.t_update_s, "buffer": len(session.buffer),
                "kept_back": job.stats.kept_back,
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume elsewhere: weights, optimiser state, buffers, rates, versions, cursor.

        Only tensors, numbers, strings and containers: `torch.load(weights_only=True)` reads it.
        """
        return {"format": CHECKPOINT_FORMAT, "order": [list(k) for k in self.order], "cursor": self.cursor,
                "sessions": {c: s.state_dict() for c, s in self.sessions.items()}}

    def load_state_dict(self, state: dict[str, Any], factory: ModelFactory) -> None:
        """Rebuild every job from `factory` (architecture + shared stem), then restore its state."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        self.sessions, self.order = {}, []
        for camera, app in state["order"]:
            job_state = state["sessions"][camera]["jobs"][app]
            model = factory(camera, app, dict(job_state["spec"]))
            self.add_job(camera, app, model, int(job_state["target"]), dict(job_state["spec"])).load_state_dict(job_state)
        for camera, session in self.sessions.items():
            session.load_buffer_and_rates(state["sessions"][camera])
        self.cursor = int(state["cursor"]) % max(1, len(self.order))

"""RetrainWorker: AMS continual learning for several cameras' apps on one GPU share (multi-client).

A thin async shell over `stemcell.learning.ams.AmsTrainer`: per (camera, app) a sliding buffer
(T_horizon 240 s), one phase of K=20 gradient-guided Adam steps (γ 5 %, lr 1e-3) above the app's
branchpoint every T_update (ASR/ATR), published as a versioned sparse update. Due jobs are served one
phase at a time on one training thread (AMS appendix E), so uploads and update requests are answered
while a phase runs: round-robin, or by the Planner's slicing grants once it sent them (`set_grants`,
`stemcell.scheduling.grant_order`). Presence apps of one class learn from the teacher's labels,
detect apps from its boxes (`stemcell.learning.detect_learning`); other apps serve as trained.

Durability: every published version is written to `persist_dir` (`stemcell.learning.versions`),
and the whole trainer state (Adam moments, buffers, ASR/ATR) every `checkpoint_every_s` and after a
camera is removed; with `max_restarts` the re-run constructor resumes from that state and then
reloads newer published versions, so edges keep patching from their version and a crash loses at
most `checkpoint_every_s` of samples and optimiser steps. Planned moves (a new GPU share: Ray cannot resize an actor) are make-before-break:

    blob = await old.checkpoint.remote(pause=True)      # stop training, snapshot everything
    new = RetrainWorker.options(num_gpus=s).remote(pkg, persist_dir=d, resume_from=blob)
    await new.ready.remote(); <route samples/updates to new>; ray.kill(old)

The checkpoint keeps weights, Adam moments and coordinate-descent scores, buffers, ASR/ATR state,
versions and the round-robin cursor. Training runs on the actor's GPU when Ray gave it one (CUDA
visible), on the CPU otherwise; checkpoints hold CPU tensors, so a worker can move between the two.
"""
from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray
from ray.util import metrics
import torch

from actors.gpu_share import enforce_share
from stemcell.control.contracts import AppRun, EdgeAdvice, JobStats, UpdateMeta, WorkerReady, WorkerStats
from stemcell.control.errors import Moved
from stemcell.learning.ams import AmsConfig, AmsTrainer, AppJob, Published, payload_kind
from stemcell.learning.detect_labels import TeacherLabels, split_labels
from stemcell.learning.detect_learning import DETECT, detect_spec, make_job
from stemcell.learning.live_stats import Estimate
from stemcell.learning.serving import LiveLearning
from stemcell.learning.versions import VersionStore
from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore
from stemcell.models import AppModel
from stemcell.package import load_package
from stemcell.package.manifest import AppEntry
from stemcell.scheduling.grant_order import next_granted

log = logging.getLogger(__name__)
V = TypeVar("V")


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def read_checkpoint(blob: bytes | dict[str, Any]) -> dict[str, Any]:
    """A checkpoint from `checkpoint()`; bytes are read with `weights_only=True` (no pickled code)."""
    return blob if isinstance(blob, dict) else torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def newest_checkpoint(*blobs: bytes | dict[str, Any] | None) -> dict[str, Any] | None:
    """The most recently saved of the given checkpoints (`saved_at`; one without it counts as oldest).

    Why: after a crash Ray re-runs the constructor with the `resume_from` it was created with (a
    move's snapshot), while the durable checkpoint in `persist_dir` may be newer, or older."""
    states = [read_checkpoint(b) for b in blobs if b is not None]
    return max(states, key=lambda st: float(st.get("saved_at", 0.0)), default=None)


@ray.remote
class RetrainWorker:
    def __init__(self, package_dir: str, *, persist_dir: str | None = None, config: dict[str, Any] | None = None,
                 share: float = 0.0, resume_from: bytes | dict[str, Any] | None = None, auto: bool = True,
                 poll_s: float = 0.25, checkpoint_every_s: float = 60.0, zoo: dict[str, Any] | None = None) -> None:
        """`zoo`: serve.yaml's `learning.zoo` (JSON); enabled, RECL's zoo lives in `persist_dir`/zoo."""
        enforce_share(share)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self._share = share
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._package = load_package(package_dir)
        base = self._package.manifest.base  # frames reach the student as they did in training
        base_cfg = AmsConfig(input_size=base.input_size, mean=base.normalization.mean, std=base.normalization.std)
        self._trainer = AmsTrainer(replace(base_cfg, **(config or {})), job_type=make_job)
        self._store = VersionStore(persist_dir, keep=self._trainer.config.history) if persist_dir else None
        self._updates = metrics.Counter("stemcell_model_updates_total", "Model versions published by retraining",
                                        tag_keys=("camera", "app"))
        self._agreement = metrics.Gauge("stemcell_learning_agreement",
                                        "Deployed model's agreement with the teacher on live samples (EWMA)",
                                        tag_keys=("camera", "app"))
        self._buffered = metrics.Gauge("stemcell_learning_samples_buffered", "Teacher-labelled samples buffered",
                                       tag_keys=("camera",))
        self._kept_back = metrics.Counter("stemcell_models_kept_back_total",
                                          "Retrained models the safety check refused (worse on held-out samples)",
                                          tag_keys=("camera", "app"))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="retrain")  # the one thread touching the trainer
        self._paused = not auto
        self._moving = False  # snapshotted for a move (checkpoint(pause=True)) until resume()
        self._poll_s = poll_s
        self._grants: dict[tuple[str, str], int] = {}  # the Planner's micro-windows per (camera, app) this round
        self._served: dict[tuple[str, str], int] = {}  # phases per job since those grants arrived
        self._restored = 0
        self._checkpoint_every_s, self._checkpointed_at = checkpoint_every_s, time.monotonic()
        self._candidates: dict[tuple[str, int], AppModel] = {}  # the package's models, scored on live samples
        self._live = LiveLearning(self._trainer, self._candidate, self._branchpoints, zoo=self._open_zoo(zoo, persist_dir),
                                  drift_threshold=float((zoo or {}).get("drift_threshold", 0.1)),
                                  switch_margin=float((zoo or {}).get("switch_margin", 0.0)),
                                  own_batches=int((zoo or {}).get("own_batches", 8)))
        state = newest_checkpoint(resume_from, self._store.load_checkpoint() if self._store else None)
        if state is not None:
            self._trainer.load_state_dict(state, self._model)
            self._live.load_state_dict(state.get("live", {}))
            self._restored = len(self._trainer.order)
        if self._store is not None:  # after a crash Ray re-runs this with the same resume_from: newer wins
            self._restore_from_store()
        self._loop_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ plumbing
    def _model(self, camera: str, app: str, spec: dict[str, Any]) -> AppModel:
        return self._package.app_model(app, int(spec["branchpoint"])).to(self._device)

    def _candidate(self, app: str, branchpoint: int) -> AppModel:
        key = (app, branchpoint)
        if key not in self._candidates:
            self._candidates[key] = self._model("", app, {"branchpoint": branchpoint}).eval()
        return self._candidates[key]

    def _branchpoints(self, app: str) -> list[int]:
        return [c.branchpoint for c in self._package.manifest.candidates_for(app)]

    def _open_zoo(self, zoo: dict[str, Any] | None, persist_dir: str | None) -> ModelZoo | None:
        if not zoo or not zoo.get("enabled") or persist_dir is None:
            return None
        base = self._package.manifest.base  # experts see frames as the package's models do
        config = ZooConfig(k=zoo["k"], alpha=zoo["alpha"], gamma=zoo["gamma"], eta=zoo["eta"], q=zoo["q"],
                           input_size=base.input_size, mean=base.normalization.mean, std=base.normalization.std)
        return ModelZoo(ZooStore(Path(persist_dir) / "zoo"), self._package.base, config)

    def _entry(self, app: str) -> AppEntry:
        entry = next((a for a in self._package.manifest.apps if a.name == app), None)
        if entry is None:
            raise ValueError(f"app {app!r} is not in the package")
        return entry

    def _target(self, app: str) -> int:
        return self._package.manifest.data.classes.index(self._entry(app).classes[0])  # the teacher's label column

    def _learnable(self, app: str) -> bool:
        """AMS retrains presence apps of one class (a presence label column) and detect apps (the
        teacher's boxes); others (count apps, presence of several classes) serve as trained."""
        entry = self._entry(app)
        if (entry.task == "presence" and len(entry.classes) == 1) or entry.task == DETECT:
            return True
        log.warning("app %s (%s of %s) is served as trained: continuous learning covers one-class presence apps "
                    "and detect apps", app, entry.task, entry.classes)
        return False

    def _spec(self, app: str, branchpoint: int) -> dict[str, Any]:
        """The job's spec: its cut, and for a detect app the label columns of its classes."""
        entry = self._entry(app)
        if entry.task == DETECT:
            return detect_spec(branchpoint, [self._package.manifest.data.classes.index(c) for c in entry.classes])
        return {"branchpoint": branchpoint}

    def _restore_from_store(self) -> None:
        assert self._store is not None
        for camera, app in self._store.jobs():
            stored = self._store.load(camera, app)
            known = (camera, app) in self._trainer.order
            if stored is None or (known and self._trainer.job(camera, app).version >= stored.version):
                continue
            job = self._trainer.add_job(camera, app, self._model(camera, app, stored.spec), stored.target, stored.spec)
            job.restore_published(stored.version, stored.weights, stored.updates, stored.last_trained_s)
            self._restored += int(not known)
        log.info("restored %d job(s) from %s", self._restored, self._store.root)

    async def _on(self, fn: Callable[..., V], *args: Any) -> V:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        """Serve due jobs round-robin, one phase per turn; idle-poll when nothing is due."""
        while True:
            published = None if self._paused or self._moving else await self._on(self._run_next)
            if published is None:
                await asyncio.sleep(self._poll_s)

    def _train_next(self) -> Published | None:
        """One phase of the due job the grants pick (`next_granted`); round-robin before any grant."""
        if not self._grants:
            return self._trainer.run_next()
        if (job := next_granted(self._trainer.due(), self._grants, self._served)) is None:
            return None
        self._served[job], session = self._served.get(job, 0) + 1, self._trainer.session(job[0])
        return session.jobs[job[1]].retrain(session.buffer)

    def _run_next(self) -> Published | None:
        published = self._train_next()
        if published is not None and published.kept_back:  # the safety check refused it: nothing to save
            self._kept_back.inc(1, tags={"camera": published.camera, "app": published.app})
        elif published is not None:
            self._persist(published)
            self._updates.inc(1, tags={"camera": published.camera, "app": published.app})
            self._live.offer(published)
            if time.monotonic() - self._checkpointed_at >= self._checkpoint_every_s:
                self._save_checkpoint()
        return published

    def _snapshot(self) -> bytes:
        return checkpoint_bytes({**self._trainer.state_dict(), "live": self._live.state_dict(), "saved_at": time.time()})

    def _save_checkpoint(self) -> None:
        """On the trainer thread (a consistent snapshot); cheap enough every minute, not every phase."""
        if self._store is not None:
            self._store.save_checkpoint(self._snapshot())
            self._checkpointed_at = time.monotonic()

    def _persist(self, p: Published) -> None:
        self._save_job(self._trainer.job(p.camera, p.app))

    def _save_job(self, job: AppJob) -> None:
        if self._store is not None:
            self._store.save(job.camera, job.app, version=job.version, target=job.target, spec=job.spec,
                             last_trained_s=job.last_trained_s, weights=job.learner.trainable_state(),
                             update=job.encoded.get(job.version))

    # ------------------------------------------------------------------ API
    async def ready(self) -> WorkerReady:
        self._ensure_loop()
        config = {k: v for k, v in asdict(self._trainer.config).items() if k != "rates"}
        return WorkerReady(self._device.type, self._share, len(self._trainer.order), self._restored, config)

    async def set_camera(self, camera: str, apps: Sequence[AppRun]) -> Mapping[str, int]:
        """Make sure (camera, app) jobs exist for `apps` (their branchpoints); idempotent; the versions.

        An app whose branchpoint moved (the Planner re-planned the camera) gets a new job on the
        package's candidate for the new cut, its version continuing past the old one; edges then
        catch up with a full update carrying the new branchpoint (`AppJob.succeed`). It is saved at
        once, so a restarted worker does not bring the old cut back."""
        self._ensure_loop()

        def add() -> dict[str, int]:
            for a in apps:
                if not self._learnable(a.app):
                    continue
                spec = self._spec(a.app, a.branchpoint)
                if self._trainer.has_job(camera, a.app, spec):
                    continue
                moved = self._trainer.has_job(camera, a.app)
                job = self._trainer.add_job(camera, a.app, self._model(camera, a.app, spec), self._target(a.app), spec)
                if moved:
                    log.info("camera %s app %s: branchpoint moved to %d, version %d", camera, a.app,
                             a.branchpoint, job.version)
                    if self._store is not None:
                        self._store.drop_updates(camera, a.app)
                    self._save_job(job)
            return self._trainer.advice(camera)["versions"]

        return await self._on(add)

    async def remove_camera(self, camera: str) -> bool:
        removed = await self._on(self._trainer.remove_camera, camera)
        await self._on(self._live.forget, camera)
        if self._store is not None:
            await self._on(self._store.delete_camera, camera)
            await self._on(self._save_checkpoint)  # a restart must not bring the camera back
        return removed

    async def add_samples(self, camera: str, t_s: list[float], frames: np.ndarray,
                          labels: np.ndarray | TeacherLabels) -> EdgeAdvice:
        """Teacher-labelled samples of one camera -> how many were taken, and what the edge does next.
        `labels`: presence (N, classes), or the TeacherLabeler's `label(..., boxes=True)` answer."""
        if self._moving:
            # refusing (not buffering in a worker about to be killed) keeps the move lossless
            raise Moved(ray.get_runtime_context().get_actor_name() or "retrain worker")
        self._ensure_loop()
        presence, boxes = split_labels(labels)
        answer = await self._on(self._trainer.add_samples, camera, np.asarray(t_s), np.asarray(frames), presence, boxes)
        return EdgeAdvice(**answer)

    async def live_samples(self, camera: str, apps: Sequence[AppRun], t_s: list[float], frames: np.ndarray,
                           labels: np.ndarray | TeacherLabels) -> EdgeAdvice:
        """Samples the serving path took from a camera's own frames (`actors.live_feed`): the camera's
        jobs exist for `apps` (the ones that learn), then the samples enter its buffer."""
        await self.set_camera(camera, apps)
        frames, presence = np.asarray(frames), split_labels(labels)[0]
        drifted = await self._on(self._live.measure, camera, [a.app for a in apps], t_s, frames, presence)
        answer = await self.add_samples(camera, t_s, frames, labels)
        self._export(camera)
        switched = [app for app in drifted if await self._on(self._live.switch, camera, app, frames, presence)]
        for app in switched:
            await self._on(self._save_job, self._trainer.job(camera, app))
        return replace(answer, versions=(await self.advice(camera)).versions) if switched else answer

    def _export(self, camera: str) -> None:
        """Dashboard gauges of one camera's learning (its status block's numbers)."""
        self._buffered.set(len(self._trainer.session(camera).buffer), tags={"camera": camera})
        for (cam, app), agreement in list(self._live.stats.agreement.items()):
            if cam == camera and agreement.now is not None:
                self._agreement.set(agreement.now, tags={"camera": camera, "app": app})

    async def learning_status(self, camera: str) -> Mapping[str, Any] | None:
        """The `learning` block of the camera's status (None: it does not learn here)."""
        return await self._on(self._live.learning_status, camera)

    async def zoo_view(self) -> Mapping[str, Any]:
        return await self._on(self._live.zoo_view)

    async def live_estimates(self) -> Mapping[str, Mapping[str, Mapping[int, Estimate]]]:
        """camera -> app -> branchpoint -> running precision/recall against the teacher (with CIs)."""
        return await self._on(self._live.estimates)

    async def advice(self, camera: str) -> EdgeAdvice:
        return EdgeAdvice(**await self._on(self._trainer.advice, camera))

    async def run_pending(self) -> list[Published]:
        """One round-robin round now (tests, benchmarks, and callers running with auto=False)."""
        def run() -> list[Published]:
            out = []
            for _ in range(len(self._trainer.order)):
                p = self._run_next()
                if p is None:
                    break
                out.append(p)
            return out

        return await self._on(run)

    async def update_since(self, camera: str, app: str, since: int | None) -> tuple[bytes, UpdateMeta] | None:
        """Encoded update taking an edge at `since` to the current version; None when it is current."""
        def get() -> tuple[bytes, UpdateMeta] | None:
            found = self._trainer.job(camera, app).payload_since(since)
            if found is None:
                return None
            payload, update = found
            return payload, UpdateMeta(update.version, update.base_version,
                                       payload_kind(update.version, update.base_version, since),
                                       self._trainer.job(camera, app).branchpoint)

        return await self._on(get)

    async def weights(self, camera: str, app: str) -> tuple[int, Mapping[str, torch.Tensor]]:
        """(version, upper segments + head incl. BN buffers): what `StemExecutor.set_app_weights` takes."""
        def get() -> tuple[int, dict[str, torch.Tensor]]:
            job = self._trainer.job(camera, app)
            return job.version, {k: v.clone() for k, v in job.learner.model.trainable_state_dict().items()}

        return await self._on(get)

    async def checkpoint(self, pause: bool = False) -> bytes:
        """Snapshot for a make-before-break move (`resume_from=`); `pause=True` stops training first,
        so no update is published here after the snapshot, and samples are refused (`Moved`: the caller follows the routes)
        until `resume()` (the move failed) or the Planner kills this actor (it succeeded)."""
        if pause:
            self._moving = True
        return await self._on(self._snapshot)

    async def resume(self) -> None:
        self._moving = False

    async def set_grants(self, grants: Mapping[str, int]) -> None:
        """The Planner's slicing grants for this worker's jobs ("camera/app" -> micro-windows) this round."""
        def apply() -> None:
            self._grants, self._served = {k.partition("/")[::2]: int(v) for k, v in grants.items()}, {}

        await self._on(apply)

    async def job_stats(self) -> WorkerStats:
        """Each job's measured gains per training phase and its agreement drop since its last update
        (how far the live agreement fell below the level it reached; None before live samples): what
        the Planner's slicing reads."""
        def job(camera: str, app: str) -> JobStats:
            s, g = self._trainer.job(camera, app).stats, self._live.stats.agreement.get((camera, app))
            now, ref = (g.now, g.reference) if g is not None else (None, None)
            drop = None if now is None or ref is None else max(0.0, ref - now)
            return JobStats(f"{camera}/{app}", tuple(s.recent_gains), s.updates, drop)

        return await self._on(lambda: WorkerStats(tuple(job(c, a) for c, a in self._trainer.order)))

    async def stats(self) -> dict[str, Any]:
        """Per job: measured retraining wall/CPU seconds, updates, recent accuracy gains, rates."""
        jobs = await self._on(self._trainer.stats)
        return {"device": self._device.type, "share": self._share, "paused": self._paused or self._moving, "jobs": jobs,
                "retrain_wall_s": sum(j["wall_s"] for j in jobs.values()),
                "retrain_cpu_s": sum(j["cpu_s"] for j in jobs.values())}

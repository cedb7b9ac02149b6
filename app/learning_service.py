"""What the continual-learning routes do, without HTTP (AMS model streaming for edge cameras).

    POST /cameras/{id}/samples   sampled frames + timestamps -> teacher labels -> RetrainWorker buffer;
                                 answers the next sampling rate (ASR) and update period (ATR)
    GET  /cameras/{id}/model     the update taking an edge from `since` to the newest version

Cameras that post frames for inference learn from them too (`observe`, from the frame routes:
`actors.live_feed` samples at the ASR rate and sends batches off the request path); their
learning state, the zoo and the live F1 estimates are the worker's views (`status`, `zoo`,
`annotate_plan`).

One TeacherLabeler and one RetrainWorker per Serve app (named actors: every ingress replica finds
the same ones; `max_restarts=-1`, and the worker reloads published versions from `persist_dir`).
When the Planner runs, the worker is its role `retrain-<learning.worker_name>` (`stemcell planner`
registers it): the Planner may then move it to another GPU share make-before-break, and this service
follows the Planner's routes to the new actor (the old one refuses samples once snapshotted).
New versions also reach the server-side StemExecutor (`set_app_weights`, an atomic swap with no
pause) on the camera's next upload, so inference in the cluster and at the edge stay on one model.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import ray
from pydantic import BaseModel, Field
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.gpu_share import actor_options
from actors.live_feed import LiveFeed
from actors.merge_worker import start_merge_schedule
from actors.retrain_worker import RetrainWorker
from actors.teacher_labeler import TeacherLabeler
from app.executors import ExecutorPool
from app.routes import RouteFollower
from app.service import read_manifest, read_routes
from stemcell.control.contracts import AppRun, CameraSpec, Routes
from stemcell.control.errors import Moved, Overloaded, UnknownCamera
from stemcell.control.roles import retrain_role
from stemcell.learning.live import LiveBatch, world_camera
from stemcell.learning.live_plan import annotate_plan
from stemcell.learning.teachers import ModelTeacherConfig, TeacherConfig
from stemcell.serve_config import ServeConfig

log = logging.getLogger(__name__)

MOVE_WAIT_S = 10.0  # how long an upload waits for a moving worker's successor before a 503


class SamplesAnswer(BaseModel):
    """Answer to `POST /cameras/{id}/samples`: what the edge should do until its next upload."""

    camera_id: str
    accepted: int = Field(description="samples kept (ones not newer than the last kept sample are dropped)")
    sampling_fps: float = Field(description="ASR: sample this many frames per second")
    t_update_s: float = Field(description="ATR: upload (and pull the model) every this many seconds")
    versions: dict[str, int] = Field(description="newest model version per app")


@dataclass(frozen=True)
class ModelAnswer:
    """An encoded update and its versions (None from `model` when the edge is current)."""

    payload: bytes
    version: int
    base_version: int | None
    kind: str  # "full", "sparse" or "merged"
    branchpoint: int | None  # the app's cut the update's tensors belong to


def teacher_config(config: ServeConfig) -> TeacherConfig:
    """The TeacherLabeler's teacher: `learning.teacher`, or else the served package's own model
    (also where a `kind: model` teacher names no package)."""
    teacher = config.learning.teacher
    if teacher is None:
        return ModelTeacherConfig(kind="model", package_dir=config.package_dir)
    if isinstance(teacher, ModelTeacherConfig) and teacher.package_dir is None and teacher.weights is None:
        return teacher.model_copy(update={"package_dir": config.package_dir})
    return teacher


def worker_role(config: ServeConfig) -> str:
    """The Planner role of the learning worker (`Planner.add_retrain_worker` names roles so)."""
    return retrain_role(config.learning.worker_name)


def learning_worker_kwargs(config: ServeConfig) -> dict[str, Any]:
    """How the learning RetrainWorker is built (less its share): one place, because the Planner
    re-creates it with these when it moves the worker to a new GPU share. JSON only."""
    c = config.learning
    ams = {"horizon_s": c.horizon_s, "iterations": c.iterations, "lr": c.lr, "gamma": c.gamma,
           "batch_size": c.batch_size, "adaptive": c.adaptive, "safety_holdout": c.safety_holdout}
    return {"package_dir": str(config.package_dir), "persist_dir": str(c.persist_dir), "config": ams,
            "checkpoint_every_s": c.checkpoint_every_s, "zoo": c.zoo.model_dump(mode="json")}


def register_learning_worker(planner: ActorHandle, config: ServeConfig) -> dict[str, Any]:
    """Make the learning worker a Planner role (adopted under its own name when it runs, started by
    the Planner otherwise): its share then counts in the plan, RECL's slicing reads its jobs, and
    the Planner may move it. Returns the role's state; safe to repeat."""
    c = config.learning
    state = ray.get(planner.add_retrain_worker.remote(c.worker_name, learning_worker_kwargs(config), c.num_gpus,
                                                      actor=c.worker_name))
    return {"role": worker_role(config), **asdict(state)}


class LearningService:
    """One per ingress replica; the teacher and the worker are shared by all replicas."""

    def __init__(self, config: ServeConfig, store: ActorHandle, pool: ExecutorPool,
                 routes: Routes | None = None) -> None:
        """`routes`: role -> actor as the Planner last published them (the worker may have moved)."""
        self.config, self.store, self.pool = config, store, pool
        c, ns = config.learning, config.executors.namespace
        gpus = bool(ray.cluster_resources().get("GPU"))
        self.teacher = TeacherLabeler.options(**actor_options(
            c.teacher_num_gpus, gpus_available=gpus, name=c.teacher_name, namespace=ns, get_if_exists=True,
            num_cpus=c.teacher_num_cpus, max_restarts=-1, max_task_retries=2,
        )).remote(share=c.teacher_num_gpus, teacher=teacher_config(config),
                   classes=read_manifest(config.package_dir)[0].data.classes)  # the workers' label columns
        self.role = worker_role(config)
        self.worker_name = (routes or Routes()).actors.get(self.role, c.worker_name)
        self._follower = RouteFollower(lambda: read_routes(store), ns)
        if self.worker_name != c.worker_name:  # moved by the Planner: its successor serves the role
            self.worker = ray.get_actor(self.worker_name, namespace=ns)
        else:
            self.worker = RetrainWorker.options(**actor_options(
                c.num_gpus, gpus_available=gpus, name=c.worker_name, namespace=ns, get_if_exists=True,
                num_cpus=c.num_cpus, max_restarts=-1, max_task_retries=2,
            )).remote(share=c.num_gpus, **learning_worker_kwargs(config))
        if c.merge_poll_s is not None:  # merges kept up on a timer (actors/merge_worker.py)
            start_merge_schedule(config, [pool.name(i) for i in range(config.executors.count)], self.worker_name)
        self.feed = LiveFeed(config, read_manifest(config.package_dir)[0].base.input_size)
        self._live_tasks: set[asyncio.Task] = set()  # batches on their way (kept: tasks are weakly held)

    async def ready(self) -> dict[str, Any]:
        return {"teacher": await self.teacher.ready.remote(), "worker": await self._worker("ready")}

    async def _worker(self, method: str, *args: Any) -> Any:
        """Call the retraining worker; when it was moved (snapshotted or gone), follow the Planner's
        route to its successor and call that once. No successor in time: 503, the edge retries."""
        name, handle = self.worker_name, self.worker
        try:
            return await getattr(handle, method).remote(*args)
        except (Moved, RayActorError) as exc:
            moved = await self._follower.successor(self.role, name, MOVE_WAIT_S)
            if moved is None:
                raise Overloaded("the retraining worker is moving to a new GPU share; retry shortly") from exc
            self.worker_name, self.worker = moved
        return await getattr(self.worker, method).remote(*args)

    async def _camera_apps(self, camera_id: str) -> tuple[AppRun, ...]:
        record = await self.store.get_camera.remote(camera_id)
        if record is None:
            raise UnknownCamera(camera_id)
        return CameraSpec.from_config(camera_id, record.config).apps

    async def samples(self, camera_id: str, frames: list[np.ndarray], timestamps: list[float]) -> dict[str, Any]:
        """Label, buffer, answer the rates; then push newer versions to the serving executor."""
        if len(timestamps) != len(frames):
            raise ValueError(f"{len(timestamps)} timestamps for {len(frames)} frames")
        if any(b <= a for a, b in zip(timestamps, timestamps[1:])):
            raise ValueError("timestamps must be strictly increasing")
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"all samples of one upload must have the same size, got {sorted(shapes)}")
        await self._worker("set_camera", camera_id, await self._camera_apps(camera_id))
        stack = np.stack(frames)
        labels = await self.teacher.label.remote(stack, world_camera(self.config.learning.teacher, camera_id, timestamps),
                                                 timestamps, boxes=True)  # boxes: detect apps learn too
        answer = await self._worker("add_samples", camera_id, timestamps, stack, labels)
        await self._push(camera_id, self.feed.answered(camera_id, answer))
        return {"camera_id": camera_id, **asdict(answer)}  # the HTTP answer (`SamplesAnswer`)

    def observe(self, camera_id: str, frames: list[np.ndarray], timestamps: list[float] | None) -> None:
        """After inference, from the frame routes: sample for the teacher (ASR rate); a full batch goes
        out in a task of its own, so the request answers without waiting for the teacher."""
        stamps = timestamps if timestamps is not None else [time.time()] * len(frames)
        batch = self.feed.observe(camera_id, frames, stamps)
        if batch is not None:
            task = asyncio.get_running_loop().create_task(self._live(batch))
            self._live_tasks.add(task)
            task.add_done_callback(self._live_tasks.discard)

    async def _live(self, batch: LiveBatch) -> None:
        """Teacher labels -> the worker's buffer -> newer versions into the executor; logged, never raised
        (a lost batch costs some samples, and the next one comes at the ASR rate)."""
        try:
            args = self.feed.request(batch, await self.store.get_camera.remote(batch.camera), self.teacher)
            if args is not None:
                answer = await self._worker("live_samples", *args)
                await self._push(batch.camera, self.feed.answered(batch.camera, answer))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("camera %s: %d live samples lost: %r", batch.camera, len(batch.timestamps), exc)

    async def _push(self, camera_id: str, apps: list[str]) -> None:
        """Serve the newest weights in the cluster too; a failure here must not fail the upload."""
        for app in apps:
            try:
                v, state = await self._worker("weights", camera_id, app)
                await self.pool.handle_for(camera_id).set_app_weights.remote(app, camera_id, state, v)
                self.feed.pushed(camera_id, app, v)
            except Exception as exc:  # noqa: BLE001 - the edge path works without it; retried next upload
                log.warning("camera %s app %s: newest version not pushed to the executor: %s", camera_id, app, exc)

    async def _optional(self, method: str, *args: Any) -> Any:
        """A worker view that decorates another answer: None when the worker cannot answer now (moving,
        restarting), so the camera's status or the plan is still served."""
        try:
            return await self._worker(method, *args)
        except Exception as exc:  # noqa: BLE001 - see above; logged
            log.warning("learning view %s unavailable: %r", method, exc)
            return None

    async def status(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's `learning` status block (None: it does not learn, or the worker cannot say now)."""
        return await self._optional("learning_status", camera_id)

    async def zoo(self) -> dict[str, Any]:
        return await self._worker("zoo_view")

    async def annotate_plan(self, plan: dict[str, Any]) -> dict[str, Any]:
        """`GET /admin/plan` with each camera app's validation and live F1 side by side."""
        estimates = await self._optional("live_estimates")
        return annotate_plan(plan, estimates or {}, self.config.learning.live_min_samples)

    async def model(self, camera_id: str, app: str | None, since: int | None) -> ModelAnswer | None:
        specs = await self._camera_apps(camera_id)
        apps = [a.app for a in specs]
        if app is None:
            if len(apps) != 1:
                raise ValueError(f"camera {camera_id!r} runs {sorted(apps)}: say which with ?app=")
            app = apps[0]
        if app not in apps:
            raise ValueError(f"camera {camera_id!r} does not run app {app!r} (it runs {sorted(apps)})")
        await self._worker("set_camera", camera_id, specs)
        found = await self._worker("update_since", camera_id, app, since)
        if found is None:
            return None
        payload, meta = found
        return ModelAnswer(payload, meta.version, meta.base_version, meta.kind, meta.branchpoint)

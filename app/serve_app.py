"""The Stemcell HTTP API: a Ray Serve FastAPI ingress in front of the StemExecutor actors.

    build_app({"config_path": "configs/serve.yaml"})   # KubeRay / `serve run app.serve_app:build_app`
    run_serve("configs/serve.yaml")                      # `stemcell serve --config ...`

OpenAPI at `/docs`.  The ingress is thin: it parses and checks requests (`app.images`,
`app.auth`), calls `app.service.StemcellService`, and maps its exceptions onto status codes.
The admin token never reaches the deployment: `build_app` reads it from the environment
variable named in the config and passes only its sha256 digest.
"""
# No `from __future__ import annotations` here: Serve's ingress copies these methods onto the
# FastAPI app, and string annotations (`'Request'`) then no longer resolve to FastAPI's types.
import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.exceptions import RayServeException

from actors.event_hub import EventForwarder
from actors.gpu_share import label_options
from app.backpressure import FRAME_ROUTES, AdmissionMiddleware, FrameDoor
from app.auth import AuthError, CameraTokens, bearer_token, digest, is_admin
from app.events_routes import EventRoutes, router as events_router
from app.executors import ExecutorPool
from app.fleet_routes import FleetRoutes, router as fleet_router
from app.ingest_service import FleetService
from app.images import Decoder, batch_frames, json_body, openapi_json_body, single_frame
from app.learning_service import LearningService, SamplesAnswer
from app.metrics import metrics
from app.observe import ObserveMiddleware
from app.openapi import serve_docs
from app.schemas import (AddCamera, AppRegistered, BatchResult, CameraAdded, CameraRemoved, CameraStatus, FrameResult,
                         PlanView, Readiness, RegisterApp)
from app.ui_routes import UiRoutes, router as ui_router
from app.service import Conflict, StemcellService, read_manifest, read_routes
from stemcell.admission import AdmissionGate, derive_limits, serve_retry_after_s
from stemcell.imaging import ImageLimits
from stemcell.latest_frames import LatestFrames
from stemcell.serve_config import ServeConfig, admin_token_from_env, load_serve_config
from stemcell.control.contracts import CameraSpec, Routes
from stemcell.control.errors import Overloaded, UnknownCamera
from stemcell.state import validate_id

log = logging.getLogger("stemcell.serve")

api = FastAPI(
    title="Stemcell",
    version="0.1.0",
    description="Many video-analytics apps for many cameras on shared GPUs. Cameras post frames with their "
    "own bearer token; admin routes take the admin token (`Authorization: Bearer ...`: Swagger's Authorize).",
    docs_url=None, redoc_url=None,  # app.openapi serves /docs from local assets
)
_TS = {"name": "ts", "in": "query", "required": False, "schema": {"type": "number"},
       "description": "capture time of the frame, unix seconds (default: arrival time)"}
_IMAGE_BODY = {"parameters": [_TS], "requestBody": {"required": True, "content": {
    t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/jpeg", "image/png")}}}
_BATCH_BODY = {"parameters": [{"name": "ts", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "application/octet-stream only: capture times, comma-separated"}],
               "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                   "type": "object", "required": ["frames"], "properties": {
                       "frames": {"type": "array", "items": {"type": "string", "format": "binary"}},
                       "ts": {"type": "array", "items": {"type": "number"}}}}},
                   "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                           "description": "each frame: its length as 4 bytes "
                                                           "big-endian, then the JPEG/PNG (stemcell.frame_stream)"}}}}}


async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "internal error"}, status_code=500)


def _replica_door() -> FrameDoor | None:
    """This replica's frame door (None while its constructor runs, or outside a replica)."""
    try:
        return getattr(serve.get_replica_context().servable_object, "door", None)
    except RayServeException:
        return None


api.add_middleware(AdmissionMiddleware, door=_replica_door)  # inside ObserveMiddleware (added last = outermost)
api.add_middleware(ObserveMiddleware)
api.include_router(events_router)
serve_docs(api)
api.add_exception_handler(Exception, _internal_error)
api.include_router(fleet_router)  # GET/PATCH /admin/cameras, POST /admin/cameras:bulk (app.fleet_routes)
api.include_router(ui_router)  # /ui, snapshots and latest results (app.ui_routes)


def _checked_id(kind: str, value: str) -> str:
    try:
        return validate_id(kind, value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _http_error(exc: Exception, retry_after_s: int) -> HTTPException:
    """The one place that decides which status a service-layer failure becomes."""
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return HTTPException(exc.status, str(exc), headers=headers)
    if isinstance(exc, Overloaded):
        wait = max(retry_after_s, math.ceil(exc.retry_after_s or 0))
        return HTTPException(503, f"overloaded, retry later: {exc}", headers={"Retry-After": str(wait)})
    if isinstance(exc, UnknownCamera):  # the store's UnknownCameraError is one too
        return HTTPException(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, PermissionError):  # a file source outside ingest.allowed_dirs
        return HTTPException(403, str(exc))
    if isinstance(exc, ValueError):  # includes ExecutorRejected and pydantic's ValidationError
        return HTTPException(422, str(exc))
    raise exc


@serve.deployment
@serve.ingress(api)
class StemcellIngress(FleetRoutes, EventRoutes, UiRoutes):
    """Routes only; see `app.service` (and `app.ingest_service` for pulled cameras) for what they do."""

    async def __init__(self, config: dict[str, Any], admin_digest_hex: str) -> None:
        from actors.state_store import get_or_create_state_store

        self.config = ServeConfig.model_validate(config)
        self._admin = bytes.fromhex(admin_digest_hex)
        self.decoder = Decoder(ImageLimits(self.config.limits.max_image_bytes, self.config.limits.max_pixels),
                               self.config.ingress.decode_threads)
        lim, ex = self.config.limits, self.config.executors
        self.door = FrameDoor(AdmissionGate(derive_limits(lim.max_queued_frames, ex.count, ex.max_batch),
                                            lim.answer_within_s, lim.retry_after_s),
                              {FRAME_ROUTES[""]: self.frames, FRAME_ROUTES[":batch"]: self.frames_batch})
        manifest, sha = read_manifest(self.config.package_dir)
        store = get_or_create_state_store(str(self.config.state_path), namespace=self.config.executors.namespace)
        opened = await store.location.remote()
        if opened != str(self.config.state_path):
            raise RuntimeError(f"the cluster's StateStore actor uses {opened}, not {self.config.state_path}; "
                               "use another executors.namespace or the same state_path")
        self.tokens = CameraTokens(store.control_snapshot.remote, store.control_changes.remote,
                                   store.verify_camera_token.remote)
        await store.set_executor_count.remote(self.config.executors.count)  # before the table: slots placed
        await self.tokens.start()
        pool = ExecutorPool(self.config.executors, str(self.config.package_dir), self._registry,
                            self.config.limits.max_queued_frames, routes=self._routes, names=await read_routes(store),
                            slot_of=self.tokens.table.slot)
        self.service = StemcellService(self.config, store, pool, manifest, sha)
        reports = await pool.ready(self.config.executors.ready_timeout_s)
        log.info("executors ready: %s", reports)
        self.latest = LatestFrames()  # each camera's newest analysed frame, for /ui and its snapshot route
        await self.service.start()
        self.fleet = FleetService(self.service)
        await self.fleet.start()
        self.events = EventForwarder(self.config)  # results go to the one event hub in batches
        self._forward_events = asyncio.create_task(self.events.follow())  # kept: tasks are weakly held
        self.learning = (LearningService(self.config, store, pool, routes=await read_routes(store))
                         if self.config.learning.enabled else None)
        if self.learning is not None:
            log.info("learning ready: %s", await self.learning.ready())

    async def _registry(self, camera_id: str) -> CameraSpec | None:
        await self.tokens.sync()  # an executor did not know the camera: maybe it was just placed elsewhere
        return await self.service.camera_spec(camera_id)

    async def _routes(self) -> Routes:
        return self.tokens.routes()  # pushed by the store: reading them costs no store call

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - _http_error re-raises what it does not map
            raise _http_error(exc, self.config.limits.retry_after_s) from exc

    # ------------------------------------------------------------------ auth
    def _require_admin(self, request: Request) -> None:
        try:
            if not is_admin(bearer_token(request.headers.get("authorization")), self._admin):
                raise AuthError(403, "this route needs the admin token")
        except AuthError as exc:
            raise _http_error(exc, 0) from exc

    async def _require_camera(self, request: Request, camera_id: str) -> None:
        """The camera's own token, or the admin token (which alone may learn that a camera does not exist)."""
        _checked_id("camera_id", camera_id)
        try:
            token = bearer_token(request.headers.get("authorization"))
        except AuthError as exc:
            raise _http_error(exc, 0) from exc
        if is_admin(token, self._admin):
            if not await self.service.camera_exists(camera_id):
                raise HTTPException(404, f"unknown camera {camera_id!r}")
            return
        if not await self.tokens.check(camera_id, token):
            raise HTTPException(403, f"this token does not open camera {camera_id!r}")

    # ------------------------------------------------------------------ probes
    @api.get("/healthz", tags=["probes"])
    async def healthz(self) -> dict[str, str]:
        """The replica's process answers (liveness)."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["probes"], response_model=None,
             responses={200: {"model": Readiness}, 503: {"model": Readiness, "description": "not ready"}})
    async def readyz(self) -> JSONResponse:
        """Every executor answers within 5 s (readiness); lists them with their camera counts."""
        try:
            reports = await self.service.pool.ping(5.0)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", and says why
            return JSONResponse({"ready": False, "reason": f"{type(exc).__name__}: {exc}"[:300]}, status_code=503)
        return JSONResponse({"ready": True, "executors": reports})

    # ------------------------------------------------------------------ cameras
    @api.post("/cameras/{camera_id}/frames", response_model=None, responses={200: {"model": FrameResult}},
              tags=["cameras"], openapi_extra=_IMAGE_BODY)
    async def frames(self, camera_id: str, request: Request) -> JSONResponse:
        """One JPEG/PNG frame (`Content-Type: image/jpeg|image/png`, optional `?ts=` seconds) -> per-app results."""
        await self._require_camera(request, camera_id)
        decoded = await single_frame(request, self.decoder, self.service.pool.input_size(camera_id))
        results = await self._call(self.service.infer(camera_id, decoded.frames, decoded.timestamps,
                                                       decoded.frame_sizes))
        metrics().record_results(camera_id, results)
        self.latest.keep(camera_id, decoded.frames[-1], results[-1], decoded.frame_size)
        self.events.on_results(camera_id, decoded.frames, results)
        if self.learning is not None:  # live samples for the teacher, sent off this request's path
            self.learning.observe(camera_id, decoded.frames, decoded.timestamps)
        return JSONResponse({"camera_id": camera_id, **results[0]})  # built by us: no response-model pass

    @api.post("/cameras/{camera_id}/frames:batch", response_model=None, responses={200: {"model": BatchResult}},
              tags=["cameras"], openapi_extra=_BATCH_BODY)
    async def frames_batch(self, camera_id: str, request: Request) -> JSONResponse:
        """Several frames in one request: multipart (repeated `frames` files, optional repeated `ts`), or
        `application/octet-stream`, each frame a 4-byte big-endian length then the JPEG/PNG (`?ts=a,b,...`)."""
        await self._require_camera(request, camera_id)
        lim = self.config.limits
        decoded = await batch_frames(request, self.decoder, lim.max_batch_frames, lim.max_batch_bytes,
                                     self.service.pool.input_size(camera_id))
        results = await self._call(self.service.infer(camera_id, decoded.frames, decoded.timestamps,
                                                       decoded.frame_sizes))
        metrics().record_results(camera_id, results)
        self.latest.keep(camera_id, decoded.frames[-1], results[-1], decoded.frame_size)
        self.events.on_results(camera_id, decoded.frames, results)
        if self.learning is not None:
            self.learning.observe(camera_id, decoded.frames, decoded.timestamps)
        return JSONResponse({"camera_id": camera_id, "frames": [{"camera_id": camera_id, **r} for r in results]})

    @api.get("/cameras/{camera_id}/status", tags=["cameras"], response_model=CameraStatus)
    async def status(self, camera_id: str, request: Request) -> dict[str, Any]:
        """Apps and branchpoints, measured frame rate and latency (this replica), executor counters."""
        await self._require_camera(request, camera_id)
        status = await self._call(self.service.status(camera_id))
        if self.learning is not None:
            status["learning"] = await self._call(self.learning.status(camera_id))
        return status

    # ------------------------------------------------------------------ learning (app.learning_service)
    @api.get("/cameras/{camera_id}/model", tags=["learning"], response_model=None, responses={
        200: {"content": {"application/octet-stream": {}}, "description": "encoded model update"},
        304: {"description": "the edge already has the newest version"}})
    async def model(self, camera_id: str, request: Request, app: str | None = Query(None, max_length=64),
                    since: int | None = Query(None, ge=0)) -> Response:
        """The update (codec bytes) from version `since` to the newest: sparse, merged, or full (no `since`)."""
        await self._require_camera(request, camera_id)
        if self.learning is None:
            raise HTTPException(404, "continual learning is not enabled on this server (learning.enabled)")
        found = await self._call(self.learning.model(camera_id, app and _checked_id("app", app), since))
        if found is None:
            return Response(status_code=304)
        return Response(found.payload, media_type="application/octet-stream", headers={
            "X-Model-Version": str(found.version), "X-Update-Kind": found.kind,
            "X-Base-Version": "none" if found.base_version is None else str(found.base_version),
            # the cut the tensors belong to: an edge holding another one rebuilds its student first
            "X-Branchpoint": "none" if found.branchpoint is None else str(found.branchpoint)})

    @api.post("/cameras/{camera_id}/samples", tags=["learning"], response_model=SamplesAnswer,
              openapi_extra=_BATCH_BODY)
    async def samples(self, camera_id: str, request: Request) -> dict[str, Any]:
        """Sampled frames (multipart `frames` + one `ts` each) -> next sampling rate and update period."""
        await self._require_camera(request, camera_id)
        if self.learning is None:
            raise HTTPException(404, "continual learning is not enabled on this server (learning.enabled)")
        most = self.config.learning.max_upload_frames
        decoded = await batch_frames(request, self.decoder, most, self.config.limits.max_batch_bytes)
        if decoded.timestamps is None:
            raise HTTPException(422, "every sample needs its capture time: send one 'ts' field per frame")
        return await self._call(self.learning.samples(camera_id, decoded.frames, decoded.timestamps))

    # ------------------------------------------------------------------ admin
    @api.post("/admin/cameras", status_code=201, response_model=CameraAdded, tags=["admin"],
              openapi_extra=openapi_json_body(AddCamera))
    async def add_camera(self, request: Request) -> dict[str, Any]:
        """Register or reconfigure a camera; with a `source` the server pulls its frames (403: a file outside
        ingest.allowed_dirs; 422: an unsupported scheme). The token is returned once (new camera, or when one is given)."""
        self._require_admin(request)
        body = await json_body(request, AddCamera)
        added = await self._call(self.fleet.add(body))
        if added["token"] is not None:
            await self.tokens.sync()  # this replica sees the new token at once (the others: pushed)
        return added

    @api.delete("/admin/cameras/{camera_id}", tags=["admin"], response_model=CameraRemoved)
    async def remove_camera(self, camera_id: str, request: Request) -> dict[str, Any]:
        self._require_admin(request)
        _checked_id("camera_id", camera_id)
        removed = await self._call(self.fleet.remove(camera_id))
        await self.tokens.sync()
        self.events.close_camera(camera_id)
        self.latest.forget(camera_id)
        return removed

    @api.post("/admin/apps", status_code=201, tags=["admin"], response_model=AppRegistered,
              openapi_extra=openapi_json_body(RegisterApp))
    async def register_app(self, request: Request) -> dict[str, Any]:
        """Register an app of the served M-Package (checked against its manifest)."""
        self._require_admin(request)
        body = await json_body(request, RegisterApp)
        return await self._call(self.service.register_app(body.app, body.package_dir))

    @api.get("/admin/plan", tags=["admin"], response_model=PlanView)
    async def plan(self, request: Request) -> dict[str, Any]:
        """Per camera, per app: branchpoint, fps, validation frame F1 and modelled event F1."""
        self._require_admin(request)
        plan = await self._call(self.service.plan())
        return plan if self.learning is None else await self._call(self.learning.annotate_plan(plan))

    @api.get("/admin/zoo", tags=["admin"])
    async def zoo(self, request: Request) -> dict[str, Any]:
        """RECL's model zoo: experts (id, base, size, admitted at, uses, cameras), admissions, prunings,
        which camera runs which expert."""
        self._require_admin(request)
        if self.learning is None:
            raise HTTPException(404, "continual learning is not enabled on this server (learning.enabled)")
        return await self._call(self.learning.zoo())


def build_app(args: dict[str, str], *, replica_env: dict[str, str] | None = None) -> serve.Application:
    """Serve application builder (`app.serve_app:build_app`, args `{config_path: ...}`).

    `replica_env`: environment of the ingress replicas beyond the job's (`run_serve` passes the ingress
    flag: behind HAProxy each replica runs its own HTTP server, and the Ray it deploys on may have been
    started without the flag, e.g. by `stemcell demo`; on `ray up`/KubeRay the nodes' environment has it).

    Fails here, before anything is deployed, on a bad config, a missing package or a missing
    admin token.
    """
    if "config_path" not in args:
        raise ValueError("build_app needs args {'config_path': 'path/to/serve.yaml'}")
    config = load_serve_config(args["config_path"])
    read_manifest(config.package_dir)
    admin_hex = digest(admin_token_from_env(config)).hex()
    ing = config.ingress
    derived = derive_limits(config.limits.max_queued_frames, config.executors.count, config.executors.max_batch)
    return StemcellIngress.options(
        **ing.replica_options(), max_ongoing_requests=derived.max_ongoing_requests,
        max_queued_requests=derived.max_queued_requests,
        backpressure_config={"retry_after_s": serve_retry_after_s(config.limits.answer_within_s,
                                                                  config.limits.retry_after_s)},
        ray_actor_options={"num_cpus": ing.num_cpus, **label_options(ing.node_labels),
                           **({"runtime_env": {"env_vars": replica_env}} if replica_env else {})},
        logging_config={"enable_access_log": ing.access_log},
    ).bind(config.model_dump(mode="json"), admin_hex)


def run_serve(config_path: str, *, block: bool = True) -> None:
    """`stemcell serve --config C`: deploy on the cluster in RAY_ADDRESS (or a local Ray) and report the URL.

    With a local Ray the process must stay up (Ray ends with it), so `block` waits for Ctrl-C.
    """
    from app.runtime import ensure_ray

    config = load_serve_config(config_path)
    env = config.http.serve_env()
    application = build_app({"config_path": str(config_path)}, replica_env=env)
    ensure_ray(env_vars=env)
    serve.start(http_options={"host": config.http.host, "port": config.http.port},
                controller_options={"runtime_env": {"env_vars": env}} if env else None)  # ignored if Serve runs already
    serve.run(application, name=config.app_name, route_prefix=config.http.route_prefix)
    url = f"http://{config.http.host}:{config.http.port}{config.http.route_prefix.rstrip('/')}"
    print(f"Stemcell is serving {config.package_dir} at {url} (OpenAPI: {url}/docs)")
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.delete(config.app_name)


__all__ = ["StemcellIngress", "api", "build_app", "run_serve"]

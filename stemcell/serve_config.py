"""`serve.yaml`: everything `stemcell serve` needs, validated before anything starts.

Pure pydantic (no Ray, no FastAPI) so the CLI, the Serve app and tests read one schema, and a typo
fails with the field's name instead of a half-started cluster.  Secrets are never in the file: it
only names the environment variable that holds the admin token.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stemcell.config import _Strict, load_config
from stemcell.cores import core_defaults, node_cpus
from stemcell.learning.teachers.config import TeacherConfig, resolve_paths
from stemcell.scheduling.registry import get_scheduler, get_slicing

MIN_ADMIN_TOKEN_CHARS = 16


HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"  # Serve's feature flag, read when its controller and replicas start
# Serve's controller kills an ingress that is not ready after 3 tries of this many seconds (default 5); a
# starting HAProxy manager missed it on loaded nodes (docs/deploy.md section 8), so haproxy gets 30.
READY_CHECK_ENV, HAPROXY_READY_CHECK_S = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", 30


class HttpSection(_Strict):
    host: str = "0.0.0.0"  # where Serve's HTTP proxy listens
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = Field("/", pattern=r"^/[A-Za-z0-9_/-]*$")  # the app's root path
    # haproxy: Serve's HAProxy ingress (a native proxy per node in front of the replicas' own HTTP servers);
    # proxy: Serve's Python proxy actor. Fixed when the Serve controller starts (docs/deploy.md section 8 says
    # why haproxy is the default: 500 clients answered within 2 s where the proxy could not, 10/10 starts).
    ingress: Literal["haproxy", "proxy"] = "haproxy"

    def serve_env(self) -> dict[str, str]:
        """Environment variables the Serve controller and the ingress replicas need for this ingress."""
        return {HAPROXY_ENV: "1", READY_CHECK_ENV: str(HAPROXY_READY_CHECK_S)} if self.ingress == "haproxy" else {}


class AutoscalingSection(_Strict):
    """Serve autoscaling of the ingress replicas (Serve's `autoscaling_config`)."""

    min_replicas: int = Field(1, ge=0)  # no constant cap: the cluster's CPUs bound replicas
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(32.0, gt=0)  # requests in flight per replica Serve aims for

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSection":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        return self


def _ingress_replicas() -> int:
    return core_defaults(node_cpus()).ingress_replicas


def _decode_threads(data: dict[str, Any]) -> int:
    return core_defaults(node_cpus(), replicas=data.get("num_replicas")).decode_threads


def _executor_cpus(data: dict[str, Any]) -> float:
    return core_defaults(node_cpus(), data.get("count", 1)).executor_cpus


class IngressSection(_Strict):
    # FastAPI replicas (HTTP decoding scales with these); auto (the default): from the node's cores (stemcell.cores)
    num_replicas: int = Field(default_factory=_ingress_replicas, ge=1)
    num_cpus: float = Field(0.5, ge=0)  # per replica; decoding JPEGs is the replica's main CPU cost
    access_log: bool = False  # Serve's line per request (refused requests are logged either way)
    # Threads per replica decoding large images off its event loop; auto (the default): from the node's cores
    decode_threads: int = Field(default_factory=_decode_threads, ge=1)
    # Only nodes carrying all these labels run ingress replicas (Ray `label_selector`), e.g. keep them on
    # CPU nodes: requests in flight on a replica whose node dies fail with Serve's own 500.
    node_labels: dict[str, str] = Field(default_factory=dict)
    autoscaling: AutoscalingSection | None = None  # set: Serve scales replicas within it (num_replicas ignored)

    @field_validator("num_replicas", mode="before")
    @classmethod
    def _auto_replicas(cls, value: Any) -> Any:
        return _ingress_replicas() if value == "auto" else value

    @field_validator("decode_threads", mode="before")
    @classmethod
    def _auto_decode_threads(cls, value: Any, info: ValidationInfo) -> Any:
        return _decode_threads(info.data) if value == "auto" else value

    def replica_options(self) -> dict[str, Any]:
        """`num_replicas` or Serve's `autoscaling_config` (Serve refuses both at once)."""
        if self.autoscaling is None:
            return {"num_replicas": self.num_replicas}
        return {"autoscaling_config": self.autoscaling.model_dump()}


class ExecutorSection(_Strict):
    count: int = Field(1, ge=1)  # StemExecutor actors (no cap: the cluster's GPUs bound them); placed by rendezvous hash
    num_gpus: float = Field(0.25, ge=0, le=8)  # GPU share of each executor (logical on CPU nodes)
    # Ray CPUs of each executor = its torch threads; auto (the default): from the node's cores (stemcell.cores)
    num_cpus: float = Field(default_factory=_executor_cpus, ge=0)
    detached: bool = False  # detached executors outlive the Serve app (and must be killed by hand)
    namespace: str = Field("stemcell", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name_prefix: str = Field("stemcell-executor", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    max_batch: int = Field(64, ge=1)  # frames the executor batches through a shared segment
    max_wait_ms: float = Field(4.0, ge=0)  # how long it waits to fill a batch
    coalesce_ms: float = Field(5.0, ge=0, le=100)  # a replica holds requests this long to send more per actor call
    ready_timeout_s: float = Field(300.0, gt=0)  # warm-up limit before the app refuses to start
    # Multi-node placement.  "spread": executors go to different nodes first (Ray's SPREAD strategy), so a
    # dead node takes few cameras with it and every GPU node works; "pack": fill a node before the next
    # (Ray's default, fewer nodes busy).  A restarted executor is placed by the same rule among live nodes.
    placement: Literal["spread", "pack"] = "spread"
    # Only nodes carrying all these labels run executors (Ray `label_selector`), e.g. the GPU workers of
    # cluster/aws-gpu.yaml: `{"ray.io/accelerator-type": "A10G"}` or a custom `ray start --labels` label.
    node_labels: dict[str, str] = Field(default_factory=dict)
    # The GPU path (docs/gpu.md). Without CUDA (or TensorRT, or bf16 on the GPU) executors fall back to
    # fp32/torch with one warning line: the same config serves on a laptop and on a GPU node.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"  # weights and activations of the stem tree
    backend: Literal["torch", "tensorrt"] = "torch"  # tensorrt: segments run as engines once built (torch meanwhile)
    engine_dir: Path | None = None  # TensorRT engine cache; None = ~/.cache/stemcell/engines on each node
    gpu_decode: bool = False  # StemExecutor.infer_jpeg decodes with nvJPEG on the executor's GPU (CPU fallback)
    # Layer swapping (issue 20): weights past this many MiB stay in host memory and are copied in per batch,
    # the most-used layers kept on the device; null: every weight on the device. The Planner may then accept
    # camera plans whose merged weights exceed the share (memory_fit's "swap").
    weight_cap_mb: float | None = Field(None, gt=0)

    @field_validator("num_cpus", mode="before")
    @classmethod
    def _auto_cpus(cls, value: Any, info: ValidationInfo) -> Any:
        return _executor_cpus(info.data) if value == "auto" else value

    def device_options(self) -> dict[str, Any]:
        """The StemExecutor keyword arguments of the GPU path (precision, backend, engine cache, weight cap)."""
        return {"precision": self.precision, "backend": self.backend, "gpu_decode": self.gpu_decode,
                "engine_dir": None if self.engine_dir is None else str(self.engine_dir),
                **({} if self.weight_cap_mb is None else {"weight_cap_bytes": int(self.weight_cap_mb * 2**20)})}


class LimitsSection(_Strict):
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # one encoded image (413 above)
    max_pixels: int = Field(4096 * 4096, ge=64)  # width*height from the header, before decoding (413 above)
    max_batch_frames: int = Field(32, ge=1)  # images in one frames:batch request
    max_batch_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # whole frames:batch body (413 above)
    # THE back-pressure setting: frames waiting per executor per replica (above -> 503 + Retry-After). Serve's
    # max_ongoing_requests / max_queued_requests and each replica's door follow from it (stemcell.admission).
    max_queued_frames: int = Field(512, ge=1)
    answer_within_s: float = Field(2.0, gt=0, le=60)  # every frame request: its result or a 503 within this
    retry_after_s: int = Field(1, ge=1)  # what 503 answers tell clients to wait


class ZooSection(_Strict):
    """RECL's model zoo in the serving path (`learning.zoo`): experts in `persist_dir`/zoo, shared by all cameras."""

    enabled: bool = False  # drift -> gating top-K experts -> safety check -> deploy; retrained models offered
    drift_threshold: float = Field(0.1, gt=0, le=1)  # agreement with the teacher falling by more: drift
    switch_margin: float = Field(0.0, ge=0, le=1)  # an expert replaces a camera's model only ahead by more (never on a tie)
    own_batches: int = Field(8, ge=1, le=100)  # live batches the replaced model may come back on
    k: int = Field(5, ge=0, le=100)  # gating picks the safety check weighs
    alpha: float = Field(0.02, ge=0, le=1)  # admission margin over the best other candidate
    gamma: int = Field(2, ge=1, le=64)  # admission queue flushes at this many models
    eta: int = Field(4, ge=0)  # prune experts chosen fewer than eta times in the last q selections
    q: int = Field(3000, ge=1)


class LearningSection(_Strict):
    """Continual learning (AMS): teacher labelling, retraining, `/model` and `/samples` routes."""

    enabled: bool = False  # off: the two routes answer 404 and no learning actors start
    persist_dir: Path | None = None  # published model versions; None = "models" beside state_path
    worker_name: str = Field("stemcell-retrain", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # RetrainWorker actor
    teacher_name: str = Field("stemcell-teacher", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # TeacherLabeler actor
    num_gpus: float = Field(0.25, ge=0, le=8)  # RetrainWorker's GPU share (all cameras round-robin)
    num_cpus: float = Field(1.0, ge=0)
    teacher_num_gpus: float = Field(0.25, ge=0, le=8)
    teacher_num_cpus: float = Field(0.5, ge=0)
    # Who labels the samples (`kind:` one of stemcell.learning.teachers.TEACHERS); None = the served package's
    # own model (`kind: model`). The oracle (the world's ground truth) also maps camera ids to world cameras.
    teacher: TeacherConfig | None = None
    horizon_s: float = Field(240.0, gt=0)  # T_horizon
    iterations: int = Field(20, ge=1, le=1000)  # K Adam steps per update
    lr: float = Field(1e-3, gt=0)
    gamma: float | None = Field(0.05, gt=0, le=1)  # coordinates per update; null = full-model updates
    batch_size: int = Field(16, ge=1, le=512)
    adaptive: bool = True  # ASR + ATR (false: 1 fps, T_update 10 s)
    max_upload_frames: int = Field(64, ge=1, le=1024)  # samples in one POST .../samples (413 above)
    checkpoint_every_s: float = Field(60.0, gt=0)  # trainer state (Adam, buffers) saved this often: a crash loses at most this
    live: bool = False  # cameras learn from the frames they are served with, unless registered with `learning`
    live_batch: int = Field(8, ge=1, le=256)  # sampled frames per teacher call
    live_max_wait_s: float = Field(10.0, gt=0)  # a partial batch goes to the teacher after this long
    live_min_samples: int = Field(200, ge=1)  # live precision/recall replace validation figures from here
    # kept live frames' longer side for the teacher (pixel teachers such as HOG); null: the model's input size
    live_teacher_side: int | None = Field(None, ge=16, le=4096)
    safety_holdout: int = Field(8, ge=0, le=256)  # newest samples a retrained model must win on (0: no check)
    zoo: ZooSection = ZooSection()
    # Scheduled merging (issue 20): a MergeWorker looks at the executors and the learner this often (null: off),
    # keeps merged models merged through the learner's updates, and (re-)merges tight executors every merge_every_s.
    merge_poll_s: float | None = Field(None, gt=0)
    merge_every_s: float = Field(1800.0, gt=0)


class PlannerSection(_Strict):
    """The Planner actor (`stemcell planner`): planning period, the GPU it splits, switch timings."""

    window_s: float = Field(10.0, ge=0)  # planning period; 0 plans only on `replan()`
    total_gpu: float = Field(1.0, gt=0)  # GPU-seconds per second the Planner may hand out
    headroom: float = Field(0.0, ge=0)  # GPU left out of planning (other tenants); switches need free room besides
    quantum: float = Field(0.05, gt=0, le=1)  # shares are multiples of this
    floor: float = Field(0.05, ge=0, le=1)  # least share of any role
    min_change: float = Field(0.1, ge=0)  # smaller share changes are not worth a switch
    scheduler: str = "mainstream"  # inference policy (`stemcell.scheduling.registry.SCHEDULERS`)
    slicing: str = "gain"  # retraining micro-window policy (`SLICING_POLICIES`)
    correlation: float = Field(0.5, ge=0, le=1)  # rho of the event-F1 model
    retrain_window_s: float = Field(1.0, gt=0)  # RECL micro-window length
    mps: bool | None = None  # set CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (None: when MPS is detected)
    grace_s: float = Field(1.5, ge=0)  # after a switch, how long ingress replicas get to pick up the new route
    warm_timeout_s: float = Field(120.0, gt=0)  # a new actor not warm by then is killed; the role keeps the old one
    drain_timeout_s: float = Field(30.0, gt=0)  # longest wait for an old executor's calls in flight
    stats_timeout_s: float = Field(5.0, gt=0)  # an actor not answering its stats by then contributes none
    worker_class: str = Field("actors.retrain_worker:RetrainWorker", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    worker_num_cpus: float = Field(1.0, ge=0)  # CPU slots of each retraining worker

    @field_validator("scheduler")
    @classmethod
    def _registered_scheduler(cls, name: str) -> str:
        get_scheduler(name)  # ValueError naming the registered ones
        return name

    @field_validator("slicing")
    @classmethod
    def _registered_slicing(cls, name: str) -> str:
        get_slicing(name)
        return name


class IngestSection(_Strict):
    """Pulled cameras (`source` in `POST /admin/cameras`): `CameraIngest` actors read the streams."""

    # File sources must lie under one of these folders (403 otherwise); empty = no file sources.
    allowed_dirs: list[Path] = Field(default_factory=list)
    cameras_per_actor: int = Field(64, ge=1, le=1000)  # reader threads (one per camera) per CameraIngest actor
    num_cpus: float = Field(1.0, ge=0)  # per CameraIngest actor: decoding is its whole cost
    name_prefix: str = Field("stemcell-ingest", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    max_failures: int = Field(5, ge=1)  # failed opens/reads in a row before a camera is `offline`
    offline_retry_s: float = Field(30.0, gt=0)  # how often an offline camera is tried again
    backoff_base_s: float = Field(0.5, gt=0)  # first reconnect delay; doubles per failure ...
    backoff_cap_s: float = Field(10.0, gt=0)  # ... up to this (each delay jittered down by up to half)
    open_timeout_s: float = Field(5.0, gt=0)  # FFmpeg's open and read timeouts: a silent source is a failure
    latest_max_bytes: int = Field(256 * 1024 * 1024, ge=1)  # per actor: newest analysed frames kept for snapshots


class EventsSection(_Strict):
    """Event tracking on served results (`stemcell.events`): kept in the StateStore, streamed, sent to webhooks."""

    enabled: bool = True  # off: no tracking, the event routes answer empty lists
    snapshot_dir: Path | None = None  # JPEG at each event start; None = no snapshots
    snapshot_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)  # whole folder; oldest snapshots go first
    snapshot_max_age_s: float = Field(7 * 24 * 3600.0, gt=0)  # older snapshots are deleted
    stream_poll_s: float = Field(0.5, gt=0, le=10)  # how often GET /admin/events:stream asks the store for news
    max_rows: int = Field(1_000_000, ge=100)  # the events table keeps the newest this many (oldest deleted)
    max_age_s: float = Field(90 * 24 * 3600.0, gt=0)  # ... and none that started longer ago than this
    forward_interval_s: float = Field(0.05, gt=0, le=5)  # how often a replica sends its results to the event hub (ingest actors: per batch)
    reorder_s: float = Field(0.15, ge=0, le=10)  # the hub holds results this long to order a camera's frames


class WebhooksSection(_Strict):
    """Delivery of event starts and ends (`stemcell.events.webhooks`)."""

    allow_private: bool = False  # true: loopback/private targets allowed (tests, in-cluster receivers)
    queue_size: int = Field(1000, ge=1)  # deliveries waiting per webhook per replica; beyond: dropped, counted
    max_attempts: int = Field(5, ge=1, le=20)  # posts per delivery before it counts as failed
    backoff_s: float = Field(0.5, gt=0)  # first retry wait, doubled per retry
    backoff_max_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)  # one POST
    refresh_s: float = Field(2.0, gt=0)  # how often a replica re-reads the webhook list (others' changes)


class ServeConfig(_Strict):
    """The Serve app: which package to serve, where state lives, how executors are placed."""

    package_dir: Path  # the M-Package the executors load (manifest.json inside)
    # Relative paths (here and in POST /admin/apps) are taken from this folder; unset: the working folder of
    # the process that loads the config (`stemcell serve`), recorded so replicas in other folders agree.
    base_dir: Path | None = None
    state_path: Path  # SQLite StateStore: cameras (hashed tokens), apps, plan survive restarts
    admin_token_env: str = Field("STEMCELL_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    app_name: str = Field("stemcell", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    default_fps: float = Field(10.0, gt=0, le=120)  # stream rate when a camera is added without one
    http: HttpSection = HttpSection()
    ingress: IngressSection = IngressSection()
    executors: ExecutorSection = ExecutorSection()
    limits: LimitsSection = LimitsSection()
    learning: LearningSection = LearningSection()
    planner: PlannerSection = PlannerSection()
    ingest: IngestSection = IngestSection()
    events: EventsSection = EventsSection()
    webhooks: WebhooksSection = WebhooksSection()

    @field_validator("package_dir", "state_path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def resolve(self, path: str | Path) -> Path:
        """An absolute path: `path` as is when absolute, else taken from `base_dir` (the working folder when unset)."""
        return ((self.base_dir or Path.cwd()) / Path(path).expanduser()).resolve()


def load_serve_config(path: str | Path) -> ServeConfig:
    """Read and validate `serve.yaml`; relative paths are made absolute against `base_dir` (default: the
    working folder), and `base_dir` is recorded so that POST /admin/apps resolves paths the same way.

    Absolute paths matter because the executors and replicas run in other processes (other
    working folders), and they must open the same package and the same state file.
    """
    config = load_config(path, ServeConfig)
    base = (config.base_dir or Path.cwd()).expanduser().resolve()
    config = config.model_copy(update={"base_dir": base})
    learning = config.learning
    persist = config.resolve(learning.persist_dir or config.state_path.parent / "models")
    teacher = resolve_paths(learning.teacher) if learning.teacher is not None else None
    engines = config.executors.engine_dir
    snapshots = config.events.snapshot_dir
    return config.model_copy(update={
        "package_dir": config.resolve(config.package_dir), "state_path": config.resolve(config.state_path),
        "executors": config.executors.model_copy(update={"engine_dir": config.resolve(engines) if engines else None}),
        "learning": learning.model_copy(update={"persist_dir": persist, "teacher": teacher}),
        "ingest": config.ingest.model_copy(update={
            "allowed_dirs": [config.resolve(d) for d in config.ingest.allowed_dirs]}),
        "events": config.events.model_copy(update={"snapshot_dir": config.resolve(snapshots) if snapshots else None}),
    })


def admin_token_from_env(config: ServeConfig, environ: dict[str, str] | None = None) -> str:
    """The admin token from the environment variable the config names.

    Refusing to start without one (or with a guessable one) is deliberate: an admin route that
    anyone can call can register cameras and read every plan.
    """
    environ = os.environ if environ is None else environ
    token = environ.get(config.admin_token_env, "")
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"admin token missing or too short: set ${config.admin_token_env} to at least {MIN_ADMIN_TOKEN_CHARS} "
            f"random characters (e.g. `export {config.admin_token_env}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`)"
        )
    return token

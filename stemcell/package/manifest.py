"""`manifest.json` schema. Versioned so an old Stemcell refuses a package it cannot read correctly."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 2  # 2: data provenance, classes, normalization, app task/min_count
_SHA256 = r"^[0-9a-f]{64}$"
_REL_PATH = r"^[A-Za-z0-9_][A-Za-z0-9_/-]*(\.[A-Za-z0-9_-]+)*\.safetensors$"  # relative, no "..", no "/"-prefix


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormalizationEntry(_Frozen):
    mean: tuple[float, float, float]  # per-channel RGB mean subtracted from pixels in [0, 1]
    std: tuple[float, float, float]  # per-channel RGB std divided by


class BaseEntry(_Frozen):
    name: str  # registry name of the base architecture
    weights: str = Field(pattern=_REL_PATH)  # base weights file, relative to the package
    sha256: str = Field(pattern=_SHA256)  # hash of that file
    input_size: int = Field(gt=0)  # square input resolution the candidates were trained at
    normalization: NormalizationEntry  # what to_input applies in training and serving alike
    num_classes: int = Field(gt=0)  # outputs of the pretraining head
    branchpoints: list[str]  # names of the S+1 cuts
    segment_hashes: list[str]  # content hash of each base segment (what the merger dedups on)
    segment_params: list[int]  # parameter count of each segment (memory accounting without loading)

    @model_validator(mode="after")
    def _consistent(self) -> BaseEntry:
        if len(self.branchpoints) != len(self.segment_hashes) + 1 or len(self.segment_params) != len(self.segment_hashes):
            raise ValueError("base: branchpoints must have one more entry than segment_hashes/segment_params")
        return self


class LatencyEntry(_Frozen):
    device: str  # where it was measured
    batch_sizes: list[int]  # measured batch sizes
    segment_s: dict[str, list[float]]  # str(batch size) -> seconds per batch for each segment
    head_s: dict[str, float]  # str(batch size) -> seconds per batch for a binary head
    full_model_s: dict[str, float]  # str(batch size) -> seconds per batch, whole model in one call
    detect_head_s: dict[str, float] | None = None  # str(batch size) -> seconds per batch for a detect app's head

    def per_frame_segment_s(self, batch_size: int) -> list[float]:
        return [t / batch_size for t in self.segment_s[str(batch_size)]]


class DataFileEntry(_Frozen):
    path: str  # as given in the training config
    sha256: str = Field(pattern=_SHA256)  # content hash when trained


class DataEntry(_Frozen):
    kind: str  # data source kind (synthetic, video_labels, coco)
    files: list[DataFileEntry]  # every input file read (none for the synthetic world)
    classes: list[str] = Field(min_length=1)  # class names, in the order of the data's columns
    label_counts: dict[str, int]  # objects per class over all labelled frames


class AppEntry(_Frozen):
    name: str  # app id
    classes: list[str] = Field(min_length=1)  # the classes it watches (an object of any of them counts)
    task: Literal["presence", "count", "detect"]  # presence: a logit head; count: a log(expected count) head;
    # detect: a CenterNet head (stemcell.models.detection), one heatmap per class in `classes` order
    min_count: int = Field(ge=1)  # the event is on while count >= min_count (1 for presence)
    positive_fraction: float  # share of labelled frames where the event is on (base rate)
    mean_event_frames: float  # mean event length in frames at the manifest's fps (event-F1 model input)


class CandidateEntry(_Frozen):
    app: str  # which app this candidate belongs to
    branchpoint: int = Field(ge=0)  # frozen shared segments
    branchpoint_name: str  # the cut's name, e.g. "after_conv4"
    trainable_params: int = Field(ge=0)  # parameters above the branchpoint (+ head)
    precision: float = Field(ge=0, le=1)  # held-out frame precision
    recall: float = Field(ge=0, le=1)  # held-out frame recall
    f1: float = Field(ge=0, le=1)  # held-out frame F1
    accuracy: float = Field(ge=0, le=1)  # held-out frame accuracy
    train_seconds: float = Field(ge=0)  # fine-tune wall time
    count_mae: float | None = Field(None, ge=0)  # count apps: held-out mean absolute count error
    map50: float | None = Field(None, ge=0, le=1)  # detect apps: held-out COCO mAP@0.5 (faster-coco-eval)
    map50_95: float | None = Field(None, ge=0, le=1)  # detect apps: held-out COCO mAP@[.5:.95]
    weights: str = Field(pattern=_REL_PATH)  # trainable part, relative path
    sha256: str = Field(pattern=_SHA256)  # hash of that file


class Manifest(_Frozen):
    schema_version: int  # must equal SCHEMA_VERSION
    created: str  # ISO-8601 time of creation
    fps: float  # frame rate of the training stream (event lengths are in these frames)
    world: dict[str, float | int] | None  # the synthetic world trained on (kind: synthetic only): test streams
    data: DataEntry  # what the candidates were trained on
    base: BaseEntry
    latency: LatencyEntry
    apps: list[AppEntry]
    candidates: list[CandidateEntry]

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        apps = {a.name for a in self.apps}
        for a in self.apps:
            unknown = sorted(set(a.classes) - set(self.data.classes))
            if unknown:
                raise ValueError(f"app {a.name!r}: classes {unknown} are not among data.classes {self.data.classes}")
        segments = len(self.base.segment_hashes)
        for c in self.candidates:
            if c.app not in apps:
                raise ValueError(f"candidate for unknown app {c.app!r}")
            if c.branchpoint > segments:
                raise ValueError(f"candidate {c.app}@{c.branchpoint}: branchpoint beyond {segments} segments")
        return self

    def candidates_for(self, app: str) -> list[CandidateEntry]:
        return sorted((c for c in self.candidates if c.app == app), key=lambda c: c.branchpoint)

"""Teacher settings: one pydantic model per kind, told apart by `kind` (validated before anything loads).

Used by `learning.teacher` in serve.yaml and by the file `stemcell label --teacher CONFIG` reads
(`teacher: {kind: ..., ...}`), so a typo fails at load with the field's name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from stemcell.config import _Strict
from stemcell.world.datatypes import CLASSES, WorldConfig

DETECTOR_ARCHS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2",
                  "retinanet_resnet50_fpn_v2", "ssdlite320_mobilenet_v3_large")


class DetectorTeacherConfig(_Strict):
    """A torchvision detector from a local weights file (a state dict: .pth/.pt read with
    `weights_only=True`, or .safetensors); its categories are mapped onto app classes."""

    kind: Literal["torchvision_detector"]
    arch: Literal[DETECTOR_ARCHS]  # type: ignore[valid-type]  # torchvision builder name
    weights: Path
    class_map: dict[str, str] = Field(min_length=1)  # detector category name -> app class (several may share one)
    score_threshold: float = Field(0.5, ge=0, le=1)  # boxes scoring below are dropped
    categories: list[str] | None = None  # detector label index -> name; None = torchvision's COCO names (91)
    min_size: int | None = Field(None, ge=32, le=2048)  # shorter side the detector resizes to (None: its default)
    batch_size: int = Field(4, ge=1, le=256)


class HogPeopleTeacherConfig(_Strict):
    """OpenCV's pretrained HOG + linear SVM pedestrian detector (no download: it ships in OpenCV).
    Its window is 64x128 px: people shorter than ~128 px are missed unless `scale` > 1."""

    kind: Literal["opencv_hog_people"]
    scale: float = Field(1.0, gt=0, le=8)  # frames are resized by this before detection (boxes mapped back)
    score_threshold: float = 0.0  # SVM margin a window must exceed (OpenCV's hitThreshold is 0)
    win_stride: int = Field(8, ge=1, le=64)  # px between windows: larger is faster, misses more
    pyramid_scale: float = Field(1.05, gt=1, le=2)  # ratio between detection scales
    class_name: str = Field("person", min_length=1)  # the app class its boxes count as


class PythonTeacherConfig(_Strict):
    """`module:factory` on the Python path; `factory(**args)` returns an object whose
    `label(frames: list[np.ndarray]) -> list[FrameObjects]` is the teacher (checked on every call)."""

    kind: Literal["python"]
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] = Field(min_length=1)  # what it reports; any other class name is an error


class ModelTeacherConfig(_Strict):
    """A presence model: a package's base and head (`package_dir`; in serve.yaml, default the served
    package) or a registry base from `stemcell pretrain` (`base` + `weights`, safetensors)."""

    kind: Literal["model"]
    package_dir: Path | None = None
    base: str | None = None  # registry architecture of `weights`, e.g. resnet18
    weights: Path | None = None
    classes: list[str] = Field(default_factory=lambda: list(CLASSES))  # the model's outputs, in order
    thresholds: float | list[float] = 0.5  # per-class probability above which a class is present
    input_size: int | None = Field(None, ge=16, le=2048)

    @model_validator(mode="after")
    def _one_source(self) -> ModelTeacherConfig:
        if self.weights is not None and self.package_dir is not None:
            raise ValueError("give package_dir (a package's model) or base + weights (a checkpoint), not both")
        if self.weights is not None and self.base is None:
            raise ValueError("weights needs base: the registry architecture the checkpoint was trained as")
        return self


class OracleTeacherConfig(_Strict):
    """The synthetic world's ground truth, for controlled experiments: the learning loop is then
    measured without teacher errors (AMS's oracle setting). Only meaningful for footage of that world
    (`stemcell stream --source synthetic:N` or its exported videos) with frames' video time known."""

    kind: Literal["oracle"]
    world: dict[str, Any] = Field(default_factory=dict)  # WorldConfig fields: seed, num_cameras, height, fps, ...
    cameras: dict[str, int] = Field(min_length=1)  # camera id (or video name) -> the world camera it shows

    @field_validator("world")
    @classmethod
    def _world(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Checked by building the WorldConfig here, so a typo fails at load, not at the first upload."""
        normalised = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        try:
            WorldConfig(**normalised)
        except TypeError as exc:  # an unknown field
            raise ValueError(f"not a world setting: {exc}") from exc
        return normalised

    @property
    def world_config(self) -> WorldConfig:
        return WorldConfig(**self.world)

    @model_validator(mode="after")
    def _cameras_exist(self) -> OracleTeacherConfig:
        count = self.world_config.num_cameras
        wrong = {cid: i for cid, i in self.cameras.items() if not 0 <= i < count}
        if wrong:
            raise ValueError(f"world cameras {wrong} outside [0, {count}) (world.num_cameras = {count})")
        return self


TeacherConfig = Annotated[
    DetectorTeacherConfig | HogPeopleTeacherConfig | PythonTeacherConfig | ModelTeacherConfig | OracleTeacherConfig,
    Field(discriminator="kind"),
]


class TeacherFile(_Strict):
    """The file `stemcell label --teacher CONFIG` reads: `teacher: {kind: ..., ...}`."""

    teacher: TeacherConfig


def resolve_paths(config: TeacherConfig, root: Path | None = None) -> TeacherConfig:
    """Relative file paths made absolute against `root` (default the working folder): teachers are
    built in other processes (Ray actors) with other working folders."""
    base = (root or Path.cwd()).resolve()
    update = {name: (base / value.expanduser()).resolve() for name in type(config).model_fields
              if isinstance(value := getattr(config, name), Path)}
    return config.model_copy(update=update)

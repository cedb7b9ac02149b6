"""YAML configuration, validated with pydantic so a typo fails fast and names the bad field."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message names file and field."""


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt option silently ignored is the worst kind of bug."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldSection(_Strict):
    seed: int = 0
    num_cameras: int = Field(4, ge=1, le=256)
    height: int = Field(64, ge=16, le=1080)
    width: int = Field(64, ge=16, le=1920)
    fps: float = Field(10.0, gt=0, le=120)
    duration_s: float = Field(600.0, gt=0)


class PretrainSection(_Strict):
    epochs: int = Field(3, ge=1)
    frames_per_camera: int = Field(1200, ge=16)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    # The base is trained on a *source* world (a different seed: other scenes, other appearances),
    # as torchvision bases are trained on ImageNet rather than on the cameras they will serve.
    # None = world.seed + 1000.
    world_seed: int | None = None
    image_folder: Path | None = None


class NormalizationSection(_Strict):
    """Per-channel mean/std of RGB in [0, 1]; ImageNet's by default, as torchvision weights expect."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = IMAGENET_STD


class BaseSection(_Strict):
    name: str = "tiny_cnn"
    input_size: int = Field(64, ge=16, le=1024)
    normalization: NormalizationSection = NormalizationSection()
    weights: Path | None = None  # a local torchvision state dict of architecture `name`
    # "none": use `weights` as they are (an ImageNet backbone is not retrained on our frames).
    pretrain: PretrainSection | Literal["none"] = PretrainSection()

    @model_validator(mode="after")
    def _weights_for_none(self) -> BaseSection:
        if self.pretrain == "none" and self.weights is None:
            raise ValueError("base.pretrain: none uses base.weights as they are, so base.weights is required")
        return self


class AppSection(_Strict):
    """One app: which class(es) it watches and what it answers (presence, how many, or where)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    target_class: str | None = Field(None, alias="class")
    classes: list[str] | None = Field(None, min_length=1)
    task: Literal["presence", "count", "detect"] = "presence"  # detect: boxes per class (trained from boxes)
    min_count: int = Field(1, ge=1)  # the event is on while count >= min_count
    cameras: list[int] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_class_field(self) -> AppSection:
        if (self.target_class is None) == (self.classes is None):
            raise ValueError(f"app {self.name!r}: give exactly one of `class` or `classes`")
        if self.task == "presence" and self.min_count != 1:
            raise ValueError(f"app {self.name!r}: min_count is for task: count or detect")
        return self

    @property
    def app_classes(self) -> tuple[str, ...]:
        """The classes this app watches (an object of any of them counts)."""
        return (self.target_class,) if self.target_class is not None else tuple(self.classes or ())


class SyntheticData(_Strict):
    """Today's synthetic world (the `world:` section): the default and the demo."""

    kind: Literal["synthetic"] = "synthetic"


class VideoLabelsData(_Strict):
    """Video files plus a labels table (CSV or Parquet): see README "Train on your own cameras"."""

    kind: Literal["video_labels"]
    videos: list[Path] | Path  # files, or one folder of them
    labels: Path  # .csv or .parquet
    labelled_frames: Literal["until_last", "listed"] = "until_last"
    labelled: dict[str, tuple[int, int]] = {}  # video file name -> [first, last] labelled frame (inclusive)
    classes: list[str] | None = None  # class order; default: the table's classes, sorted


class CocoData(_Strict):
    """A COCO detection JSON; `images` defaults to the JSON's folder."""

    kind: Literal["coco"]
    annotations: Path
    images: Path | None = None
    classes: list[str] | None = None  # default: the categories, in file order
    fps: float = Field(10.0, gt=0)  # frame rate of the image sequences (held-out chunks, event lengths)


class ImageFolderData(_Strict):
    """One sub-folder per class, one label per image: for pretraining a base only."""

    kind: Literal["image_folder"]
    root: Path


DataSection = Annotated[SyntheticData | VideoLabelsData | CocoData | ImageFolderData, Field(discriminator="kind")]


class TrainerSection(_Strict):
    branchpoints: list[int] | Literal["all"] = "all"
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    train_frames_per_camera: int = Field(800, ge=16)
    val_fraction: float = Field(0.3, gt=0, lt=1)
    val_chunk_s: float = Field(20.0, gt=0)  # held-out split by whole chunks of this many seconds per video
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.25, ge=0, le=1)
    max_concurrent_trials: int | None = Field(None, ge=1)


class LatencySection(_Strict):
    batch_sizes: list[int] = [1, 8, 32]
    repeats: int = Field(10, ge=1)


class TrainConfig(_Strict):
    """Everything `stemcell pretrain` and `stemcell train` need (the M-Trainer's input)."""

    world: WorldSection = WorldSection()
    data: DataSection = SyntheticData()
    base: BaseSection = BaseSection()
    apps: list[AppSection]
    trainer: TrainerSection = TrainerSection()
    latency: LatencySection = LatencySection()

    @model_validator(mode="after")
    def _unique_apps(self) -> TrainConfig:
        names = [a.name for a in self.apps]
        if len(set(names)) != len(names):
            raise ValueError(f"app names must be unique, got {names}")
        if not self.apps:
            raise ValueError("at least one app is required")
        return self


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(path: str | Path, model: type[ConfigT]) -> ConfigT:
    """Read YAML at `path` and validate it as `model`, with errors like `trainer.epochs: ...`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config: {problems}") from exc

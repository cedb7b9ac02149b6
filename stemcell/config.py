"""YAML configuration, validated with pydantic so a typo fails fast and names the bad field."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CLASS_NAMES = ("person", "car", "bus", "bicycle", "dog")


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


class BaseSection(_Strict):
    name: str = "tiny_cnn"
    input_size: int = Field(64, ge=16, le=1024)
    weights: Path | None = None
    pretrain: PretrainSection = PretrainSection()


class AppSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    target_class: str = Field(alias="class")
    cameras: list[int] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("target_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        if value not in CLASS_NAMES:
            raise ValueError(f"unknown class {value!r}; choose one of {list(CLASS_NAMES)}")
        return value


class TrainerSection(_Strict):
    branchpoints: list[int] | Literal["all"] = "all"
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    train_frames_per_camera: int = Field(800, ge=16)
    val_fraction: float = Field(0.3, gt=0, lt=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.25, ge=0, le=1)
    max_concurrent_trials: int | None = Field(None, ge=1)


class LatencySection(_Strict):
    batch_sizes: list[int] = [1, 8, 32]
    repeats: int = Field(10, ge=1)


class TrainConfig(_Strict):
    """Everything `stemcell pretrain` and `stemcell train` need (the M-Trainer's input)."""

    world: WorldSection = WorldSection()
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

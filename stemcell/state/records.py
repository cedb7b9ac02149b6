"""Typed records the StateStore persists, and the validators shared with the HTTP layer.

Records are frozen so that a value read from the store (or restored from a snapshot after an
actor restart) cannot be mutated behind the store's back; the store is the only writer.
Identifiers end up in URLs, log lines and file names, so they are validated at this boundary
once, with one regular expression, instead of being escaped everywhere downstream.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def validate_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe identifier, else raise ``ValueError`` naming ``kind``.

    Safe means: 1-64 characters from ``[A-Za-z0-9_.-]``, starting with a letter or digit. That
    rules out path tricks (``../x``, ``a/b``, a leading dot), NUL bytes and trailing newlines
    (``fullmatch``, unlike ``$``, does not accept a final ``\\n``).
    """
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ValueError(
            f"invalid {kind}: {value!r} (expected 1-64 characters from [A-Za-z0-9_.-], "
            "starting with a letter or digit)"
        )
    return value


def validate_sha256(kind: str, value: object) -> str:
    """Return ``value`` if it is a lowercase hex SHA-256 digest, else raise ``ValueError``."""
    if not isinstance(value, str) or SHA256_PATTERN.fullmatch(value) is None:
        raise ValueError(f"invalid {kind}: {value!r} (expected 64 lowercase hex characters)")
    return value


def validate_path(kind: str, value: object) -> str:
    """Return a non-empty path string without NUL bytes (SQLite and the OS disagree on NUL)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"invalid {kind}: {value!r} (expected a non-empty path without NUL)")
    return value


def canonical_json(kind: str, value: Mapping[str, Any]) -> str:
    """Serialise a JSON object deterministically (sorted keys) so equal values compare equal.

    NaN/Infinity are rejected: they are not JSON and other readers (browsers, jq) choke on them.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"invalid {kind}: expected a JSON object, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid {kind}: not JSON-serialisable ({exc})") from exc


def validate_timestamp(kind: str, value: float) -> float:
    """Clocks are injected; reject a broken fake clock before it poisons stored rows."""
    if not math.isfinite(value):
        raise ValueError(f"invalid {kind}: {value!r} (expected a finite number of seconds)")
    return float(value)


@dataclass(frozen=True)
class CameraRecord:
    """A registered camera. The token itself is never held here, only whether one is set."""

    camera_id: str  # validated identifier, primary key
    config: Mapping[str, Any] = field(default_factory=dict)  # free-form JSON object
    has_token: bool = False  # a salted token hash is stored for this camera
    created_at: float = 0.0  # clock seconds at first insert
    updated_at: float = 0.0  # clock seconds at the last upsert


@dataclass(frozen=True)
class AppRecord:
    """An analytics app, bound to one camera or (``camera_id is None``) to every camera."""

    name: str  # validated identifier; unique per scope
    camera_id: str | None  # None means a global app
    package_path: str  # where the candidate set (M-Package) lives
    manifest_sha256: str  # content hash of the package manifest, pins the exact candidates
    branchpoint: str  # named layer where the app's branch leaves the shared stem
    config: Mapping[str, Any] = field(default_factory=dict)  # extra app settings (JSON object)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class PlanRecord:
    """One saved planner output; versions increase by one per distinct plan."""

    version: int
    created_at: float
    sha256: str  # digest of the canonical JSON, used to make save_plan retry-safe
    plan: Mapping[str, Any]


@dataclass(frozen=True)
class ModelVersionRecord:
    """One published model for an app at a camera (or globally): weights file plus its hash."""

    app: str
    camera_id: str | None  # None means the app's global model
    version: int  # 1, 2, ... per (app, camera_id)
    path: str  # safetensors file
    sha256: str  # digest of the safetensors file, checked by loaders
    created_at: float


@dataclass(frozen=True)
class StateSnapshot:
    """Everything a restarted actor needs to rebuild its in-memory view, read in one transaction."""

    schema_version: int
    cameras: tuple[CameraRecord, ...]
    apps: tuple[AppRecord, ...]
    latest_plan: PlanRecord | None
    latest_models: tuple[ModelVersionRecord, ...]  # newest version per (app, camera_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form, e.g. for an admin endpoint or a debug dump."""
        return asdict(self)

"""Durable state for Stemcell: cameras, apps, plans and model versions in one SQLite file.

Pure Python (sqlite3 + json + hashlib); the Ray actor in ``actors/state_store.py`` is a thin
shell over :class:`StateStore`, and the HTTP layer reuses :func:`validate_id`.
"""
from stemcell.state.records import (
    AppRecord,
    CameraRecord,
    ModelVersionRecord,
    PlanRecord,
    StateSnapshot,
    validate_id,
)
from stemcell.state.schema import SCHEMA_VERSION, SchemaVersionError
from stemcell.state.sections import CAMERAS, PLANNER
from stemcell.state.store import StateStore, UnknownCameraError, default_state_path
from stemcell.state.tokens import new_token

__all__ = [
    "CAMERAS",
    "PLANNER",
    "SCHEMA_VERSION",
    "AppRecord",
    "CameraRecord",
    "ModelVersionRecord",
    "PlanRecord",
    "SchemaVersionError",
    "StateSnapshot",
    "StateStore",
    "UnknownCameraError",
    "default_state_path",
    "new_token",
    "validate_id",
]

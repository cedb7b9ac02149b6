"""Durable model zoo: experts as safetensors files + one schema-versioned JSON manifest.

An expert is the trainable part of an AppModel (upper segments + head, i.e.
`AppModel.trainable_state_dict()`) plus metadata. It keeps its app's branchpoint and records the
hash of the frozen stem it was trained on top of, so it can only be plugged back onto that exact
stem (the stem stays shared across every app and camera).

Every file is written atomically (temp file in the same folder, fsync, rename) and the manifest
records each file's sha256: a file that was edited, truncated or swapped is refused with
`ZooIntegrityError` instead of being loaded into a model. Gating-network weights per app live in
the same store so the whole zoo survives a restart of the actor that holds it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from stemcell.models import AppModel, segment_hash
from stemcell.models.detection import model_task

SCHEMA_VERSION = 1
_MANIFEST = "manifest.json"
_HISTORY = "history.json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ZooIntegrityError(RuntimeError):
    """A zoo file does not match its manifest (tampered, truncated, missing) or the schema is unknown."""


@dataclass(frozen=True)
class ExpertMeta:
    """Everything known about an expert without loading its weights."""

    expert_id: str  # unique within the store; also its file name, so restricted to [A-Za-z0-9_.-]
    app: str  # the app (binary task) it answers; experts are only ever compared within one app
    branchpoint: int  # number of frozen stem segments under it (the app's Mainstream branchpoint)
    base_hash: str  # segment_hash of the frozen stem it plugs onto
    version: int  # version of the camera's model it was taken from
    created_from: str  # camera whose teacher-labelled frames trained it
    created_at: float = 0.0  # seconds on the zoo's clock when it was created
    task: str = "presence"  # its app's task (its head): "presence" or "detect"; never offered to another task

    def __post_init__(self) -> None:
        if not _SAFE_ID.match(self.expert_id):
            raise ValueError(f"expert id must match {_SAFE_ID.pattern}, got {self.expert_id!r}")


@dataclass(frozen=True)
class Expert:
    meta: ExpertMeta
    state: Mapping[str, torch.Tensor]  # AppModel.trainable_state_dict(): upper segments + head


def stem_hash(model: AppModel) -> str:
    """Identity of the frozen stem an app model runs on (what an expert must be loaded onto)."""
    return segment_hash(model.stem)


def expert_from_model(
    model: AppModel, *, expert_id: str, app: str, version: int, created_from: str, created_at: float = 0.0
) -> Expert:
    """Snapshot the trainable part of `model` (a copy: later training does not change the expert)."""
    meta = ExpertMeta(expert_id, app, model.branchpoint, stem_hash(model), version, created_from, created_at,
                      model_task(model))
    state = {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}
    return Expert(meta, state)


def load_expert(model: AppModel, expert: Expert) -> AppModel:
    """Load `expert` into `model` after checking it was trained on the same frozen stem."""
    if model.branchpoint != expert.meta.branchpoint:
        raise ValueError(
            f"expert {expert.meta.expert_id} is for branchpoint {expert.meta.branchpoint}, model has {model.branchpoint}"
        )
    if stem_hash(model) != expert.meta.base_hash:
        raise ValueError(f"expert {expert.meta.expert_id} was trained on a different stem (base hash mismatch)")
    model.load_trainable_state_dict(dict(expert.state))
    return model


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it (rename is atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ZooStore:
    """A directory: `manifest.json`, `experts/<id>.safetensors`, `gating/<app>.safetensors`, `history.json`.

    The manifest is the source of truth: a file not in it is ignored, and a file in it is loaded
    only if its sha256 matches. Writes go file first, manifest second, so a crash in between leaves
    an unreferenced file, never a manifest pointing at a missing or partial one.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._manifest = self._read_manifest()

    # -- manifest ---------------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        path = self.root / _MANIFEST
        if not path.exists():
            return {"schema_version": SCHEMA_VERSION, "experts": {}, "gating": {}}
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ZooIntegrityError(f"{path}: manifest is not valid JSON ({exc})") from exc
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        if version != SCHEMA_VERSION:
            raise ZooIntegrityError(f"{path}: unsupported zoo schema_version {version!r} (expected {SCHEMA_VERSION})")
        return manifest

    def _write_manifest(self) -> None:
        _atomic_write(self.root / _MANIFEST, (json.dumps(self._manifest, indent=2, sort_keys=True) + "\n").encode())

    def _write_entry(self, rel: str, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
        data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata)
        _atomic_write(self.root / rel, data)
        return {"file": rel, "sha256": _sha256(data)}

    def _read_entry(self, what: str, entry: Mapping[str, str]) -> dict[str, torch.Tensor]:
        path = self.root / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ZooIntegrityError(f"{what}: file {path} listed in the manifest is missing") from exc
        actual = _sha256(data)
        if actual != entry["sha256"]:
            raise ZooIntegrityError(
                f"{what}: {path} has sha256 {actual[:12]}..., manifest records {entry['sha256'][:12]}...; "
                "refusing to load a modified file"
            )
        return load_safetensors_bytes(data)

    # -- experts ----------------------------------------------------------------------------------
    def put(self, expert: Expert) -> None:
        """Add or replace an expert (file written and verified by hash before the manifest names it)."""
        meta = expert.meta
        entry = self._write_entry(f"experts/{meta.expert_id}.safetensors", expert.state, {"expert": json.dumps(asdict(meta))})
        self._manifest["experts"][meta.expert_id] = {**entry, "meta": asdict(meta)}
        self._write_manifest()

    def get(self, expert_id: str) -> Expert:
        entry = self._manifest["experts"].get(expert_id)
        if entry is None:
            raise KeyError(f"no expert {expert_id!r} in zoo {self.root}")
        state = self._read_entry(f"expert {expert_id}", entry)
        return Expert(ExpertMeta(**entry["meta"]), state)

    def remove(self, expert_id: str) -> None:
        entry = self._manifest["experts"].pop(expert_id)
        self._write_manifest()
        (self.root / entry["file"]).unlink(missing_ok=True)

    def meta(self, expert_id: str) -> ExpertMeta:
        return ExpertMeta(**self._manifest["experts"][expert_id]["meta"])

    def metas(self, app: str | None = None) -> list[ExpertMeta]:
        """Experts in insertion order, optionally only those of `app`."""
        metas = [ExpertMeta(**e["meta"]) for e in self._manifest["experts"].values()]
        return [m for m in metas if app is None or m.app == app]

    def __contains__(self, expert_id: object) -> bool:
        return expert_id in self._manifest["experts"]

    def __len__(self) -> int:
        return len(self._manifest["experts"])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._manifest["experts"]))

    # -- selection history -----------------------------------------------------------------------
    def put_history(self, history: Mapping[str, Any]) -> None:
        """The safety checker's recent choices (`SelectionHistory.state_dict`): the experts' `uses` and
        what pruning judges, kept across restarts. Its own file: it changes at every selection, the
        manifest only when experts come and go."""
        _atomic_write(self.root / _HISTORY, (json.dumps(dict(history), sort_keys=True) + "\n").encode())

    def get_history(self) -> dict[str, Any] | None:
        """The saved history; None when there is none or it is unreadable (it is soft state: it refills)."""
        try:
            history = json.loads((self.root / _HISTORY).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return history if isinstance(history, dict) else None

    # -- gating networks --------------------------------------------------------------------------
    def put_gating(self, app: str, state: Mapping[str, torch.Tensor], expert_ids: list[str]) -> None:
        """Persist an app's gating network together with the expert each output neuron scores."""
        if not _SAFE_ID.match(app):
            raise ValueError(f"app name must match {_SAFE_ID.pattern}, got {app!r}")
        entry = self._write_entry(f"gating/{app}.safetensors", state, {"expert_ids": json.dumps(expert_ids)})
        self._manifest["gating"][app] = {**entry, "expert_ids": list(expert_ids)}
        self._write_manifest()

    def get_gating(self, app: str) -> tuple[dict[str, torch.Tensor], list[str]] | None:
        entry = self._manifest["gating"].get(app)
        if entry is None:
            return None
        return self._read_entry(f"gating network of {app}", entry), list(entry["expert_ids"])

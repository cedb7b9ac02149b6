"""Durable published model versions: what a restarted RetrainWorker reloads (Ray's `max_restarts`
re-runs the constructor with empty memory).

Layout, one folder per (camera, app) under `root`:
    <camera>/<app>/job.json                 {"version", "target", "spec", "last_trained_s"}
    <camera>/<app>/weights.safetensors      trainable weights at that version (fp16-exact fp32)
    <camera>/<app>/updates/<version>.scup   the encoded sparse updates (sha256-checked by `decode`)

Writes are atomic (temporary file + `os.replace`) and the weights go before `job.json`, so a crash
mid-publish leaves the previous version readable. Old update files beyond `keep` are deleted.
Optimiser moments are not persisted per update (that would triple the write volume every 10 s);
the worker writes its whole trainer state (moments, buffers, rates) to `trainer.ckpt` every
`checkpoint_every_s` instead, so a crash loses at most that much of them, and the published weights
and versions (newer wins) are never lost. A planned move carries the state in `AmsTrainer.state_dict`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stemcell.learning.codec import decode
from stemcell.models import load_safetensors, save_safetensors
from stemcell.state import validate_id

CHECKPOINT_FILE = "trainer.ckpt"  # a file at the root: camera folders are directories, never confused


@dataclass(frozen=True, eq=False)
class StoredJob:
    camera: str
    app: str
    version: int
    target: int
    spec: dict[str, Any]
    last_trained_s: float | None
    weights: dict[str, torch.Tensor]
    updates: dict[int, bytes]  # version -> encoded update, oldest first


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class VersionStore:
    """Folder of published versions, one sub-folder per job (ids are validated: no path tricks)."""

    def __init__(self, root: str | Path, keep: int = 32) -> None:
        self.root = Path(root)
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, camera: str, app: str) -> Path:
        return self.root / validate_id("camera_id", camera) / validate_id("app", app)

    def save(self, camera: str, app: str, *, version: int, target: int, spec: dict[str, Any],
             last_trained_s: float | None, weights: dict[str, torch.Tensor], update: bytes | None) -> None:
        folder = self._dir(camera, app)
        if update is not None:
            _atomic_write(folder / "updates" / f"{version:010d}.scup", update)
        tmp = folder / "weights.safetensors.tmp"
        save_safetensors(weights, tmp)
        os.replace(tmp, folder / "weights.safetensors")
        meta = {"version": version, "target": target, "spec": spec, "last_trained_s": last_trained_s}
        _atomic_write(folder / "job.json", json.dumps(meta).encode())
        for old in sorted((folder / "updates").glob("*.scup"))[: -self.keep] if self.keep else []:
            old.unlink(missing_ok=True)

    def drop_updates(self, camera: str, app: str) -> None:
        """Forget the stored updates of (camera, app): they patch a tensor layout it no longer has."""
        for old in (self._dir(camera, app) / "updates").glob("*.scup"):
            old.unlink(missing_ok=True)

    def load(self, camera: str, app: str) -> StoredJob | None:
        folder = self._dir(camera, app)
        if not (folder / "job.json").is_file():
            return None
        meta = json.loads((folder / "job.json").read_text())
        version = int(meta["version"])
        updates = {}
        for path in sorted((folder / "updates").glob("*.scup")):
            v = int(path.stem)
            if v <= version:  # an update file written just before a crash, without its weights, is ignored
                payload = path.read_bytes()
                decode(payload)  # checksum: a corrupt file fails here, not at an edge
                updates[v] = payload
        return StoredJob(camera, app, version, int(meta["target"]), dict(meta["spec"]), meta["last_trained_s"],
                         load_safetensors(folder / "weights.safetensors"), updates)

    def jobs(self) -> Iterator[tuple[str, str]]:
        """Every (camera, app) with a published version."""
        for meta in sorted(self.root.glob("*/*/job.json")):
            yield meta.parent.parent.name, meta.parent.name

    def save_checkpoint(self, blob: bytes) -> None:
        """The worker's whole trainer state (atomic: a crash mid-write keeps the previous one)."""
        _atomic_write(self.root / CHECKPOINT_FILE, blob)

    def load_checkpoint(self) -> bytes | None:
        path = self.root / CHECKPOINT_FILE
        return path.read_bytes() if path.is_file() else None

    def delete_camera(self, camera: str) -> None:
        folder = self.root / validate_id("camera_id", camera)
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        if folder.exists():
            folder.rmdir()

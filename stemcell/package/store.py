"""Writing and loading M-Packages; loading verifies schema and every file hash."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from stemcell.models import (
    AppModel,
    SegmentedNet,
    build_base,
    load_safetensors,
    make_task_model,
    save_safetensors,
    segment_hash,
)
from stemcell.package.manifest import Manifest

MANIFEST = "manifest.json"
# Set explicitly, not left to the writer's umask or to safetensors (which writes 0600): a package built
# by one user is served by workers running as another (container images, shared NFS).
FILE_MODE, DIR_MODE = 0o644, 0o755


class PackageError(ValueError):
    """The package is missing, truncated, tampered with, or of an unknown schema."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_weights(state: dict[str, torch.Tensor], root: Path, relative: str) -> str:
    """Save `state` as safetensors under `root/relative` (mode 0644) and return its sha256 for the manifest."""
    path = save_safetensors(state, root / relative)
    os.chmod(path, FILE_MODE)
    for folder in [path.parent, *path.parent.parents]:  # root and sub-folders: traversable by others
        if not folder.is_relative_to(root):
            break
        os.chmod(folder, DIR_MODE)
    return file_sha256(path)


def write_package(root: str | Path, manifest: Manifest) -> Path:
    """Write the manifest last and atomically: a package is complete iff manifest.json exists."""
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.chmod(tmp, FILE_MODE)
    os.chmod(root, DIR_MODE)
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


@dataclass
class MPackage:
    """A loaded, verified package. Candidates are materialised on demand (weights are small)."""

    root: Path
    manifest: Manifest
    base: SegmentedNet

    def app_model(self, app: str, branchpoint: int) -> AppModel:
        """The app's candidate at `branchpoint`, sharing this package's base stem objects."""
        entry = next((c for c in self.manifest.candidates if c.app == app and c.branchpoint == branchpoint), None)
        if entry is None:
            have = [c.branchpoint for c in self.manifest.candidates_for(app)]
            raise KeyError(f"no candidate for app {app!r} at branchpoint {branchpoint}; have {have}")
        model = self.empty_app_model(app, branchpoint)
        model.load_trainable_state_dict(load_safetensors(self.root / entry.weights))
        return model.eval()


    def empty_app_model(self, app: str, branchpoint: int) -> AppModel:
        """The app's architecture at `branchpoint` (its task's head), before its weights are loaded."""
        entry = next((a for a in self.manifest.apps if a.name == app), None)
        if entry is None:
            raise KeyError(f"no app {app!r} in the package; have {[a.name for a in self.manifest.apps]}")
        return make_task_model(self.base, branchpoint, entry.task, len(entry.classes))


def _verified(root: Path, relative: str, sha256: str) -> Path:
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise PackageError(f"{relative}: path escapes the package")
    if not path.is_file():
        raise PackageError(f"{path}: file listed in the manifest is missing")
    actual = file_sha256(path)
    if actual != sha256:
        raise PackageError(f"{path}: sha256 mismatch (manifest {sha256[:12]}..., file {actual[:12]}...): corrupt or tampered")
    return path


def load_package(root: str | Path) -> MPackage:
    """Load and verify a package: schema, every file's hash, and that the base rebuilds identically."""
    root = Path(root)
    try:
        raw = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise PackageError(f"{root}: no {MANIFEST} (not an M-Package, or training did not finish)") from exc
    except json.JSONDecodeError as exc:
        raise PackageError(f"{root / MANIFEST}: not valid JSON ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise PackageError(f"{root / MANIFEST}: invalid manifest: {problems}") from exc
    base_path = _verified(root, manifest.base.weights, manifest.base.sha256)
    for c in manifest.candidates:
        _verified(root, c.weights, c.sha256)
    base = build_base(manifest.base.name, num_classes=manifest.base.num_classes)
    try:
        base.load_state_dict(load_safetensors(base_path))
    except RuntimeError as exc:
        raise PackageError(f"{base_path}: weights do not fit {manifest.base.name}: {exc}") from exc
    if [segment_hash(s) for s in base.segments] != manifest.base.segment_hashes:
        raise PackageError(f"{root}: base segment hashes differ from the manifest")
    return MPackage(root, manifest, base.eval())

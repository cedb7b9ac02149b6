"""TensorRT engines on disk, keyed by everything that makes an engine valid.

An engine is only valid for the exact segment weights, the per-frame input shape, the precision
and batch profile it was built with, the GPU model it was tuned on and the TensorRT version that
serialised it. All of these go into the key, so changing any of them (new weights, another input
size, a driver upgrade that brings another TensorRT, a node with another GPU) simply misses the
cache and builds anew: nothing stale is ever deserialised. A truncated or corrupt file is detected
by its recorded sha256 and rebuilt.

Files are written atomically (a reader sees the old engine or the new one) and mode 0644, so an
image built by one user serves under another.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o644


@dataclass(frozen=True)
class EngineKey:
    segment_hash: str  # content hash of the segment (StemTree node digest): identical segments share it
    input_shape: tuple[int, ...]  # one frame's input (C, H, W); the batch axis is the dynamic profile
    precision: str  # fp32 | fp16 | bf16: the builder flag
    max_batch: int  # the profile is 1..max_batch
    gpu_model: str  # torch.cuda.get_device_name(): engines are tuned per GPU model
    tensorrt_version: str  # serialised engines only load in the TensorRT version that built them

    def digest(self) -> str:
        fields = {**asdict(self), "input_shape": list(self.input_shape)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def write_readable(path: Path, data: bytes) -> Path:
    """Write `data` atomically with mode 0644 (readable by a serving user other than the writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class EngineCache:
    """`<root>/<digest>.engine` (the serialised engine) + `<digest>.json` (its key and sha256)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, key: EngineKey) -> tuple[Path, Path]:
        digest = key.digest()
        return self.root / f"{digest}.engine", self.root / f"{digest}.json"

    def load(self, key: EngineKey) -> bytes | None:
        """The engine built for exactly `key`, or None (never built, or damaged: then it is removed)."""
        engine, meta = self._paths(key)
        try:
            record = json.loads(meta.read_text())
            blob = engine.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("engine cache entry %s unreadable (%s): rebuilding", engine.name, exc)
            self._remove(key)
            return None
        if record.get("key") != json.loads(json.dumps(asdict(key))) or record.get("sha256") != hashlib.sha256(blob).hexdigest():
            log.warning("engine cache entry %s does not match its record (truncated or foreign): rebuilding", engine.name)
            self._remove(key)
            return None
        return blob

    def store(self, key: EngineKey, blob: bytes) -> Path:
        """Engine first, record last: an engine without its record is never loaded."""
        engine, meta = self._paths(key)
        write_readable(engine, blob)
        write_readable(meta, json.dumps({"key": asdict(key), "sha256": hashlib.sha256(blob).hexdigest()}).encode())
        return engine

    def keys(self) -> list[EngineKey]:
        out = []
        for meta in sorted(self.root.glob("*.json")):
            try:
                raw = json.loads(meta.read_text())["key"]
                out.append(EngineKey(**{**raw, "input_shape": tuple(raw["input_shape"])}))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def evict_stale(self, gpu_model: str, tensorrt_version: str) -> int:
        """Remove engines this node can never load (other GPU model or TensorRT version); returns how many."""
        stale = [k for k in self.keys() if (k.gpu_model, k.tensorrt_version) != (gpu_model, tensorrt_version)]
        for key in stale:
            self._remove(key)
        return len(stale)

    def _remove(self, key: EngineKey) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)

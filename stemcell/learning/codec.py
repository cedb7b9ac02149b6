"""Versioned sparse model updates: what the server sends an edge after each retraining phase.

An update names the tensors it covers (the app's trainable tensors: upper segments + head; the
shared stem never changes), a flat boolean mask over all their coordinates (tensor order, row-major)
and the new values of the masked coordinates as fp16. A full-model update is the same thing with an
all-true mask, so an edge has a single code path.

Precision contract: values travel as IEEE fp16. Applying to an fp32 model sets w = float32(fp16),
which is exact, so an edge that applies an update holds *bit-identical* weights to a server that
rounded its own copy the same way (the retraining loop does). Non-float tensors are refused.

Wire format (little-endian):
    b"SCUP" | u8 schema | u32 header_len | header (UTF-8 JSON) | mask block | values block | sha256
The sha256 covers every preceding byte, so any corruption or truncation is refused before parsing.
"""
from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stemcell.learning.packing import PackingError, decode_mask, decode_values, encode_mask, encode_values

MAGIC = b"SCUP"
SCHEMA_VERSION = 1
_DIGEST = 32
_PREFIX = struct.Struct("<4sBI")


class UpdateFormatError(ValueError):
    """The bytes are not a valid update (corrupt, truncated, wrong magic or schema)."""


class UpdateMismatchError(ValueError):
    """A valid update that does not fit: wrong base version, tensor names or shapes."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor covered by an update (its coordinates are contiguous in the flat mask)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "float32"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class SparseUpdate:
    """New fp16 values for the masked coordinates, moving a model from `base_version` to `version`."""

    version: int  # model version after applying
    base_version: int | None  # version it must be applied on; None = full update, applies to any
    specs: tuple[TensorSpec, ...]  # covered tensors, in flat-mask order
    mask: np.ndarray  # bool (total coordinates,)
    values: np.ndarray  # float16 (mask.sum(),), in flat-mask order

    def __post_init__(self) -> None:
        total = sum(s.numel for s in self.specs)
        if self.mask.dtype != bool or self.mask.shape != (total,):
            raise ValueError(f"mask must be bool of shape ({total},), got {self.mask.dtype} {self.mask.shape}")
        if self.values.dtype != np.float16 or self.values.shape != (int(self.mask.sum()),):
            raise ValueError(f"values must be float16 with one entry per masked coordinate ({int(self.mask.sum())})")
        if self.base_version is None and not self.is_full:
            raise ValueError("only a full update (all coordinates) may omit base_version")

    @property
    def is_full(self) -> bool:
        return bool(self.mask.all())

    @property
    def mask_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def masks_by_name(self) -> dict[str, np.ndarray]:
        """The flat mask cut back into per-tensor boolean arrays of each tensor's shape."""
        pieces = np.split(self.mask, np.cumsum([s.numel for s in self.specs])[:-1])
        return {s.name: p.reshape(s.shape) for s, p in zip(self.specs, pieces)}


def _specs(state: Mapping[str, torch.Tensor]) -> tuple[TensorSpec, ...]:
    specs = []
    for name, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"tensor {name!r} is {t.dtype}; updates carry fp16 values and cover float tensors only")
        specs.append(TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")))
    return tuple(specs)


def _flat(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().flatten().cpu().float() for t in state.values()]) if state else torch.zeros(0)


def _to_fp16(values: torch.Tensor) -> np.ndarray:
    out = values.to(torch.float16).numpy()
    if not np.isfinite(out).all():
        raise ValueError("a weight is outside the fp16 range (|w| > 65504) or not finite; it cannot be sent")
    return out


def make_update(
    old_state: Mapping[str, torch.Tensor],
    new_state: Mapping[str, torch.Tensor],
    *,
    version: int,
    base_version: int,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> SparseUpdate:
    """The update from `old_state` (at `base_version`) to `new_state` (at `version`).

    `mask` (per tensor, bool) names the coordinates to send, e.g. the coordinate-descent masks;
    without it, every coordinate whose value differs is sent.
    """
    if list(old_state) != list(new_state):
        raise UpdateMismatchError("old and new states must cover the same tensors in the same order")
    specs = _specs(new_state)
    for s in specs:
        if tuple(old_state[s.name].shape) != s.shape:
            raise UpdateMismatchError(f"{s.name}: shape {tuple(old_state[s.name].shape)} != {s.shape}")
    new_flat = _flat(new_state)
    if mask is None:
        flat_mask = (new_flat != _flat(old_state)).numpy()
    else:
        if list(mask) != list(new_state):
            raise UpdateMismatchError("mask must cover the same tensors in the same order as the state")
        flat_mask = torch.cat([m.detach().flatten().cpu().bool() for m in mask.values()]).numpy()
    return SparseUpdate(version, base_version, specs, flat_mask, _to_fp16(new_flat[torch.from_numpy(flat_mask)]))


def full_update(state: Mapping[str, torch.Tensor], *, version: int) -> SparseUpdate:
    """Every coordinate of `state`: for a new edge, or one too far behind to patch."""
    flat = _flat(state)
    return SparseUpdate(version, None, _specs(state), np.ones(flat.numel(), dtype=bool), _to_fp16(flat))


def apply_update(
    state: Mapping[str, torch.Tensor], update: SparseUpdate, *, current_version: int | None
) -> dict[str, torch.Tensor]:
    """A new state dict with `update` applied (value = fp16 -> tensor dtype); `state` is not modified.

    Tensors the update does not cover are passed through. A sparse update is refused unless
    `current_version` equals its base version (patching another version would corrupt the model).
    """
    if not update.is_full and current_version != update.base_version:
        raise UpdateMismatchError(
            f"update {update.base_version}->{update.version} cannot be applied to version {current_version}"
        )
    out = dict(state)
    offset = 0
    for name, piece in update.masks_by_name().items():
        if name not in state or tuple(state[name].shape) != piece.shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise UpdateMismatchError(f"tensor {name!r}: update has shape {piece.shape}, model has {got}")
        count = int(piece.sum())
        if count:
            tensor = state[name].detach().clone()
            values = torch.from_numpy(update.values[offset : offset + count].astype(np.float32))
            tensor[torch.from_numpy(piece).to(tensor.device)] = values.to(tensor.device, tensor.dtype)
            out[name] = tensor
        offset += count
    return out


def merge_updates(updates: Sequence[SparseUpdate]) -> SparseUpdate:
    """One update equivalent to applying `updates` in order (later versions win per coordinate).

    They must form a chain (each base = previous version, or be full); merging starts from the last
    full update, since it overwrites everything before it.
    """
    if not updates:
        raise ValueError("nothing to merge")
    for prev, nxt in zip(updates, updates[1:]):
        if nxt.specs != prev.specs:
            raise UpdateMismatchError("updates cover different tensors; they belong to different models")
        if not nxt.is_full and nxt.base_version != prev.version:
            raise UpdateMismatchError(f"not a chain: {prev.version} is followed by an update based on {nxt.base_version}")
    start = max(i for i, u in enumerate(updates) if i == 0 or u.is_full)
    chain = updates[start:]
    dense = np.zeros(chain[0].mask.shape, dtype=np.float16)
    mask = np.zeros(chain[0].mask.shape, dtype=bool)
    for u in chain:
        dense[u.mask] = u.values
        mask |= u.mask
    base = None if mask.all() else chain[0].base_version
    return SparseUpdate(updates[-1].version, base, chain[0].specs, mask, dense[mask])


def catch_up_update(
    edge_version: int | None,
    history: Mapping[int, SparseUpdate],
    state: Mapping[str, torch.Tensor],
    *,
    version: int,
    max_chain: int = 16,
    max_fraction: float = 0.5,
) -> SparseUpdate | None:
    """What to send an edge at `edge_version` so it reaches `version` (whose weights are `state`).

    `history` maps version -> the update that produced it. Rule: None when the edge is current;
    the merge of the missed updates when they are all known, at most `max_chain` of them, and the
    merge touches at most `max_fraction` of the coordinates (beyond that a full update is about as
    big and simpler); otherwise (unknown version, too far behind, or no edge version) a full update.
    """
    if edge_version == version:
        return None
    chain: list[SparseUpdate] = []
    cursor: int | None = version
    while edge_version is not None and cursor != edge_version and cursor in history and len(chain) <= max_chain:
        chain.append(history[cursor])
        cursor = history[cursor].base_version
    if edge_version is not None and cursor == edge_version and 0 < len(chain) <= max_chain:
        merged = merge_updates(chain[::-1])
        if merged.mask_fraction <= max_fraction:
            return merged
    return full_update(state, version=version)


def encode(update: SparseUpdate) -> bytes:
    """Serialise `update` (see the module docstring for the layout)."""
    mask_method, mask_bytes = encode_mask(update.mask)
    values_method, values_bytes = encode_values(update.values)
    header = {
        "version": update.version,
        "base_version": update.base_version,
        "tensors": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in update.specs],
        "num_values": int(update.values.size),
        "mask": {**mask_method, "nbytes": len(mask_bytes)},
        "values": {**values_method, "nbytes": len(values_bytes)},
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, SCHEMA_VERSION, len(header_bytes)) + header_bytes + mask_bytes + values_bytes
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> SparseUpdate:
    """Parse and verify bytes from `encode`; raises UpdateFormatError on anything inconsistent."""
    if len(data) < _PREFIX.size + _DIGEST:
        raise UpdateFormatError(f"update is truncated: {len(data)} bytes is shorter than the fixed framing")
    magic, schema, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise UpdateFormatError(f"not a Stemcell model update (magic {magic!r})")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise UpdateFormatError("update checksum mismatch: the payload is corrupt or truncated")
    if schema != SCHEMA_VERSION:
        raise UpdateFormatError(f"unsupported update schema {schema} (this build reads {SCHEMA_VERSION})")
    try:
        start = _PREFIX.size
        header = json.loads(body[start : start + header_len])
        specs = tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in header["tensors"])
        mask_start = start + header_len
        values_start = mask_start + header["mask"]["nbytes"]
        if values_start + header["values"]["nbytes"] != len(body):
            raise UpdateFormatError("update block sizes do not add up to the payload length")
        mask = decode_mask(header["mask"], body[mask_start:values_start], sum(s.numel for s in specs))
        values = decode_values(header["values"], body[values_start:], int(header["num_values"]))
        return SparseUpdate(int(header["version"]), header["base_version"], specs, mask, values)
    except UpdateFormatError:
        raise
    except (KeyError, TypeError, ValueError, PackingError) as exc:
        raise UpdateFormatError(f"malformed update: {exc}") from exc

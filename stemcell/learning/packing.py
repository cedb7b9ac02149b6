"""Byte-level compression of sparse-update payloads: the bitmask and the fp16 values.

Why a choice of encodings: a γ-sparse mask from random selection looks like i.i.d. bits, where
delta-coded indices (LEB128 varints of the gaps) + deflate land within ~5% of the entropy bound;
gradient-guided masks cluster (whole rows, whole heads), where a plain bitmap + deflate/lzma can win.
The cheapest is picked per payload and named in the header, so the decoder needs no guessing.
"""
from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable

import numpy as np

# Raw LZMA2 (no xz container: ~60 bytes less) with a 1 MiB window: blocks are at most a few MB.
_LZMA = {"format": lzma.FORMAT_RAW, "filters": [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20, "preset": 6}]}
# LZMA beats deflate by 5-10% on sparse blocks but only ~1% on dense full-model ones, where it
# costs ~50 ms per update: above this size only deflate is tried.
_LZMA_MAX_INPUT = 128 * 1024

_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "none": (lambda b: b, lambda b: b),
    "zlib": (lambda b: zlib.compress(b, 9), zlib.decompress),
    "lzma": (lambda b: lzma.compress(b, **_LZMA), lambda b: lzma.decompress(b, **_LZMA)),
}


class PackingError(ValueError):
    """A payload block cannot be decoded (unknown method or inconsistent content)."""


def compress_smallest(data: bytes) -> tuple[str, bytes]:
    """(name, compressed) for the compressor that gives the fewest bytes ("none" included)."""
    names = [n for n in _COMPRESSORS if n != "lzma" or len(data) <= _LZMA_MAX_INPUT]
    return min(((n, _COMPRESSORS[n][0](data)) for n in names), key=lambda x: len(x[1]))


def decompress(name: str, data: bytes) -> bytes:
    if name not in _COMPRESSORS:
        raise PackingError(f"unknown compressor {name!r}")
    try:
        return _COMPRESSORS[name][1](data)
    except (zlib.error, lzma.LZMAError) as exc:
        raise PackingError(f"{name} block does not decompress: {exc}") from exc


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 (7 bits per byte, high bit = more bytes follow) of non-negative integers, vectorised."""
    x = values.astype(np.uint64)
    nbytes = np.ones(len(x), dtype=np.int64)
    for shift in range(7, 64, 7):
        nbytes += x >= np.uint64(1 << shift)
    starts = np.concatenate([[0], np.cumsum(nbytes)[:-1]]).astype(np.int64)
    out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    for j in range(int(nbytes.max(initial=0))):
        sel = nbytes > j
        chunk = (x[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (chunk | more).astype(np.uint8)
    return out.tobytes()


def varint_decode(data: bytes) -> np.ndarray:
    """Inverse of `varint_encode` (uint64 array); refuses a stream that ends mid-number."""
    b = np.frombuffer(data, dtype=np.uint8)
    if len(b) == 0:
        return np.zeros(0, dtype=np.uint64)
    is_last = (b & 0x80) == 0
    if not is_last[-1]:
        raise PackingError("varint stream ends in the middle of a number")
    value_id = np.concatenate([[0], np.cumsum(is_last)[:-1]])
    first_byte = np.flatnonzero(np.concatenate([[True], is_last[:-1]]))
    position = np.arange(len(b)) - first_byte[value_id]
    if position.max() >= 10:
        raise PackingError("varint longer than 64 bits")
    out = np.zeros(int(is_last.sum()), dtype=np.uint64)
    np.add.at(out, value_id, (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64))
    return out


def _smallest_layout(candidates: dict[str, bytes]) -> tuple[dict[str, str], bytes]:
    """The (layout, compressor) pair whose output is smallest: the data decides, not a fixed rule."""
    packed = {layout: compress_smallest(raw) for layout, raw in candidates.items()}
    layout = min(packed, key=lambda name: len(packed[name][1]))
    compressor, data = packed[layout]
    return {"layout": layout, "compressor": compressor}, data


def encode_mask(mask: np.ndarray) -> tuple[dict[str, str], bytes]:
    """Flat bool mask -> (method description, bytes). An all-true mask costs zero bytes."""
    if mask.all():
        return {"layout": "all", "compressor": "none"}, b""
    indices = np.flatnonzero(mask)
    gaps = np.diff(np.concatenate([[-1], indices])) - 1
    candidates = {"bitmap": np.packbits(mask).tobytes(), "gaps": varint_encode(gaps)}
    return _smallest_layout(candidates)


def decode_mask(method: dict[str, str], data: bytes, size: int) -> np.ndarray:
    """Inverse of `encode_mask` for a mask of `size` coordinates."""
    layout = method.get("layout")
    if layout == "all":
        return np.ones(size, dtype=bool)
    raw = decompress(method.get("compressor", ""), data)
    if layout == "bitmap":
        if len(raw) != (size + 7) // 8:
            raise PackingError(f"bitmap has {len(raw)} bytes, expected {(size + 7) // 8}")
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=size).astype(bool)
    if layout == "gaps":
        indices = np.cumsum(varint_decode(raw).astype(np.int64) + 1) - 1
        if len(indices) and indices[-1] >= size:
            raise PackingError(f"mask index {indices[-1]} out of range for {size} coordinates")
        mask = np.zeros(size, dtype=bool)
        mask[indices] = True
        return mask
    raise PackingError(f"unknown mask layout {layout!r}")


def encode_values(values: np.ndarray) -> tuple[dict[str, str], bytes]:
    """fp16 values -> (method, bytes). Byte-shuffling groups the sign/exponent bytes, which compress."""
    v = np.ascontiguousarray(values, dtype="<f2")
    candidates = {"plain": v.tobytes(), "shuffle": v.view(np.uint8).reshape(-1, 2).T.tobytes()}
    return _smallest_layout(candidates)


def decode_values(method: dict[str, str], data: bytes, count: int) -> np.ndarray:
    """Inverse of `encode_values`: exactly `count` little-endian fp16 values."""
    raw = decompress(method.get("compressor", ""), data)
    if len(raw) != 2 * count:
        raise PackingError(f"values block has {len(raw)} bytes, expected {2 * count}")
    layout = method.get("layout")
    if layout == "plain":
        return np.frombuffer(raw, dtype="<f2").copy()
    if layout == "shuffle":
        return np.frombuffer(raw, dtype=np.uint8).reshape(2, count).T.copy().view("<f2").reshape(-1)
    raise PackingError(f"unknown values layout {layout!r}")

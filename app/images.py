"""Reading request bodies (images, JSON) with hard limits (the HTTP half of `stemcell.imaging`).

Limits are enforced twice on purpose: Content-Length is checked before reading (cheap refusal of
an honest client), and the bytes actually read are counted (a chunked or lying client cannot
make the replica buffer more than the limit).  Every failure is an `HTTPException` with a JSON
message: bad input must never become a 500 or reach an executor.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from stemcell.imaging import ImageError, ImageLimits, decode_for_model, decode_image, header_size, sniff_format

STATUS_FOR_REASON = {"unsupported": 415, "corrupt": 400, "too_large": 413}
DECODE_IN_THREAD_BYTES = 256 * 1024  # bigger images are decoded off the event loop
JSON_BODY_LIMIT = 64 * 1024  # admin JSON bodies are a few hundred bytes
MAX_SIDE = 65535  # the largest side a JPEG header can declare: bound of a client-declared `?w=&h=`
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Decoded:
    """Frames of one request, ready for an executor."""

    frames: list[np.ndarray]  # RGB uint8 (H, W, 3) (size x size when a size was given), in request order
    timestamps: list[float] | None  # client timestamps when given, one per frame
    frame_size: tuple[int, int] | None = None  # (height, width) the camera sent, when `frames` were resized


def _declared_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return
    if not raw.isdigit():
        raise HTTPException(400, f"bad Content-Length {raw!r}")
    if int(raw) > limit:
        raise HTTPException(413, f"request body is {raw} bytes; the limit is {limit}")


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body's chunks, failing with 413 as soon as more than `limit` bytes arrived."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    _declared_length(request, limit)
    return b"".join([chunk async for chunk in _limited(request, limit)])


async def json_body(request: Request, model: type[ModelT], limit: int = JSON_BODY_LIMIT) -> ModelT:
    """A bounded JSON body validated as `model` (422 with every problem named).

    Routes read JSON themselves, after their token check: FastAPI would otherwise buffer a body of
    any size, from anyone, before the handler runs.
    """
    raw = await read_body(request, limit)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10])
        raise HTTPException(422, f"invalid {model.__name__} body: {problems}") from exc


def openapi_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body of a route that reads it itself."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return inline(defs[ref.rsplit("/", 1)[1]]) if ref.startswith("#/$defs/") else {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


async def _decode(data: bytes, content_type: str | None, limits: ImageLimits, what: str, size: int | None) -> np.ndarray:
    """The whole image, or with `size` the model-size frame (DCT-scaled decode, then the one resize)."""
    decode = functools.partial(decode_image, data, content_type, limits) if size is None else \
        functools.partial(decode_for_model, data, content_type, size, limits)
    try:
        if len(data) > DECODE_IN_THREAD_BYTES:
            return await asyncio.to_thread(decode)
        return decode()
    except ImageError as exc:
        raise HTTPException(STATUS_FOR_REASON[exc.reason], f"{what}: {exc}") from exc


def _own_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an image `_decode` accepted, from its header alone (no second decode)."""
    width, height = header_size(data, sniff_format(data))  # type: ignore[arg-type]
    return height, width


def _declared_size(request: Request) -> tuple[int, int] | None:
    """`?w=&h=`: the frame's own size when the client resized it before upload (detect apps' boxes
    and zones are in these pixels); both or neither, integers 1..65535 (JPEG's largest side)."""
    w, h = request.query_params.get("w"), request.query_params.get("h")
    if w is None and h is None:
        return None
    if w is None or h is None or not all(v.isascii() and v.isdigit() and 1 <= int(v) <= MAX_SIDE for v in (w, h)):
        raise HTTPException(422, f"w and h must be given together as integers 1..{MAX_SIDE}, got w={w!r} h={h!r}")
    return int(h), int(w)


def _one_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The request's one frame size: a batch of differently sized images is refused (one size per
    request keeps each frame's boxes in its own pixels without splitting the executor call)."""
    if len(set(sizes)) > 1:
        raise HTTPException(422, f"frames of one request differ in size (height, width): {sorted(set(sizes))}; "
                                 "send one size per request")
    return sizes[0]


def _timestamp(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise HTTPException(422, f"ts must be a finite number of seconds, got {text!r}")
    return value


async def single_frame(request: Request, limits: ImageLimits, size: int | None = None) -> Decoded:
    """`POST .../frames`: the body is one JPEG/PNG; optional `?ts=` is the capture time. With `size`
    the frame comes back at the model's input (size x size), else whole; `frame_size` is its own
    size, or the `?w=&h=` the client declared."""
    ts = _timestamp(request.query_params.get("ts"))
    declared = _declared_size(request)
    data = await read_body(request, limits.max_bytes)
    frame = await _decode(data, request.headers.get("content-type"), limits, "image", size)
    return Decoded([frame], None if ts is None else [ts], declared or _own_size(data))


async def batch_frames(request: Request, limits: ImageLimits, max_frames: int, max_bytes: int,
                       size: int | None = None) -> Decoded:
    """`POST .../frames:batch`: multipart/form-data, repeated `frames` files, optional repeated `ts`
    (`size`, `?w=&h=` as in `single_frame`; the images must share one size)."""
    declared = _declared_size(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise HTTPException(415, f"frames:batch takes multipart/form-data with repeated 'frames' files, got {media or 'nothing'!r}")
    _declared_length(request, max_bytes)
    parser = MultiPartParser(request.headers, _limited(request, max_bytes), max_files=max_frames, max_fields=max_frames)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        too_big = "Too many" in exc.message or "maximum size" in exc.message  # parts, fields, or one part's bytes
        raise HTTPException(413 if too_big else 400, f"multipart body: {exc.message}") from exc
    try:
        unexpected = sorted({k for k in form.keys() if k not in ("frames", "ts")})
        if unexpected:
            raise HTTPException(400, f"unexpected form field(s) {unexpected}; send 'frames' (files) and optional 'ts'")
        uploads = form.getlist("frames")
        if not uploads or not all(isinstance(u, UploadFile) for u in uploads):
            raise HTTPException(400, "no images: send one or more files in the 'frames' field")
        stamps = [_timestamp(t) for t in form.getlist("ts") if isinstance(t, str)]
        if stamps and len(stamps) != len(uploads):
            raise HTTPException(422, f"{len(stamps)} ts values for {len(uploads)} frames")
        frames, sizes = [], []
        for i, upload in enumerate(uploads):
            data = await upload.read()
            frames.append(await _decode(data, upload.content_type, limits, f"frames[{i}]", size))
            sizes.append(_own_size(data))
    finally:
        await form.close()
    return Decoded(frames, stamps or None, declared or _one_size(sizes))  # type: ignore[arg-type]

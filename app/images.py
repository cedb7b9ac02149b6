"""Reading request bodies (images, JSON) with hard limits (the HTTP half of `stemcell.imaging`).

Limits are enforced twice on purpose: Content-Length is checked before reading (cheap refusal of
an honest client), and the bytes actually read are counted (a chunked or lying client cannot
make the replica buffer more than the limit).  Every failure is an `HTTPException` with a JSON
message: bad input must never become a 500 or reach an executor.

A replica's `Decoder` decodes small images (a 128 px JPEG: ~0.1 ms) inline and larger ones
(`DECODE_IN_THREAD_BYTES`; a 720p JPEG takes 1-4 ms, long enough to stall every other request on
the event loop) on its own `ingress.decode_threads` threads: libjpeg-turbo and OpenCV release the
GIL, so those decodes run on other cores while the loop serves the next requests.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from stemcell.imaging import ImageError, ImageLimits, decode_sized

STATUS_FOR_REASON = {"unsupported": 415, "corrupt": 400, "too_large": 413}
DECODE_IN_THREAD_BYTES = 32 * 1024  # bigger images (720p JPEGs are ~100 KB) are decoded off the event loop
JSON_BODY_LIMIT = 64 * 1024  # admin JSON bodies are a few hundred bytes
MAX_SIDE = 65535  # the largest side a JPEG header can declare: bound of a client-declared `?w=&h=`
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Decoded:
    """Frames of one request, ready for an executor."""

    frames: list[np.ndarray]  # RGB uint8 (H, W, 3) (size x size when a size was given), in request order
    timestamps: list[float] | None  # client timestamps when given, one per frame
    frame_sizes: list[tuple[int, int]] | None = None  # per frame (height, width) as the camera sent it

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """The last frame's own size (the one `/latest` shows)."""
        return self.frame_sizes[-1] if self.frame_sizes else None


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


class Decoder:
    """A replica's image decoding: its limits, and the threads large images are decoded on."""

    def __init__(self, limits: ImageLimits, threads: int = 1) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    async def __call__(self, data: bytes, content_type: str | None, what: str,
                       size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
        """(frame, its own (height, width)): the whole image, or with `size` the model-size frame
        (DCT-scaled decode, then the one resize); an unusable image is the 4xx its reason maps to."""
        decode = functools.partial(decode_sized, data, content_type, self.limits, size)
        try:
            if len(data) > DECODE_IN_THREAD_BYTES:
                return await asyncio.get_running_loop().run_in_executor(self._pool, decode)
            return decode()
        except ImageError as exc:
            raise HTTPException(STATUS_FOR_REASON[exc.reason], f"{what}: {exc}") from exc


def _declared_size(request: Request) -> tuple[int, int] | None:
    """`?w=&h=`: the frame's own size when the client resized it before upload (detect apps' boxes
    and zones are in these pixels); both or neither, integers 1..65535 (JPEG's largest side)."""
    w, h = request.query_params.get("w"), request.query_params.get("h")
    if w is None and h is None:
        return None
    if w is None or h is None or not all(v.isascii() and v.isdigit() and 1 <= int(v) <= MAX_SIDE for v in (w, h)):
        raise HTTPException(422, f"w and h must be given together as integers 1..{MAX_SIDE}, got w={w!r} h={h!r}")
    return int(h), int(w)


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


async def single_frame(request: Request, decoder: Decoder, size: int | None = None) -> Decoded:
    """`POST .../frames`: the body is one JPEG/PNG; optional `?ts=` is the capture time. With `size`
    the frame comes back at the model's input (size x size), else whole; `frame_size` is its own
    size, or the `?w=&h=` the client declared."""
    ts = _timestamp(request.query_params.get("ts"))
    declared = _declared_size(request)
    data = await read_body(request, decoder.limits.max_bytes)
    frame, own = await decoder(data, request.headers.get("content-type"), "image", size)
    return Decoded([frame], None if ts is None else [ts], [declared or own])


async def batch_frames(request: Request, decoder: Decoder, max_frames: int, max_bytes: int,
                       size: int | None = None) -> Decoded:
    """`POST .../frames:batch`: multipart/form-data, repeated `frames` files, optional repeated `ts`
    (`size`, `?w=&h=` as in `single_frame`; images of different sizes keep each its own)."""
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
            frame, own = await decoder(await upload.read(), upload.content_type, f"frames[{i}]", size)
            frames.append(frame)
            sizes.append(own)
    finally:
        await form.close()
    return Decoded(frames, stamps or None, [declared] * len(frames) if declared else sizes)  # type: ignore[arg-type]

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
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from stemcell.frame_stream import MEDIA_TYPE as FRAME_STREAM
from stemcell.frame_stream import FramingError, parse_timestamps, split_frames
from stemcell.imaging import ImageError, ImageLimits, decode_sized, sniff_format

STATUS_FOR_REASON = {"unsupported": 415, "corrupt": 400, "too_large": 413}
DECODE_IN_THREAD_BYTES = 32 * 1024  # bigger images (720p JPEGs are ~100 KB) are decoded off the event loop
JSON_BODY_LIMIT = 64 * 1024  # admin JSON bodies are a few hundred bytes
MAX_SIDE = 65535  # the largest side a JPEG header can declare: bound of a client-declared `?w=&h=`
ModelT = TypeVar("ModelT", bound=BaseModel)
Image = tuple[bytes, str | None, str]  # (encoded bytes, declared Content-Type, name in error messages)
Frame = tuple[np.ndarray, tuple[int, int]]  # (decoded frame, the image's own (height, width))


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
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    def _decode(self, numbered: Sequence[tuple[int, Image]], size: int | None) -> list[Frame]:
        """Decode in order; the first unusable image stops here, named by its index in the request."""
        out = []
        for index, (data, content_type, what) in numbered:
            try:
                out.append(decode_sized(data, content_type, self.limits, size))
            except ImageError as exc:
                raise _Unusable(index, HTTPException(STATUS_FOR_REASON[exc.reason], f"{what}: {exc}")) from exc
        return out

    async def __call__(self, data: bytes, content_type: str | None, what: str,
                       size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
        """(frame, its own (height, width)): the whole image, or with `size` the model-size frame
        (DCT-scaled decode, then the one resize); an unusable image is the 4xx its reason maps to."""
        return (await self.decode_all([(data, content_type, what)], size))[0]

    async def decode_all(self, images: Sequence[Image], size: int | None) -> list[Frame]:
        """Every image of a request, as `__call__` decodes one: inline when all are small, else split over
        the decode threads, one hand-off per thread (a 1080p batch of 8 decodes on every thread at once,
        not one frame after another); the first unusable image in request order is its 4xx."""
        numbered = list(enumerate(images))
        try:
            if all(len(data) <= DECODE_IN_THREAD_BYTES for data, _, _ in images):
                return self._decode(numbered, size)
            shares = min(self._threads, len(images))
            loop = asyncio.get_running_loop()
            parts = await asyncio.gather(*(loop.run_in_executor(self._pool, self._decode, numbered[k::shares], size)
                                           for k in range(shares)), return_exceptions=True)
            failed = [p for p in parts if isinstance(p, BaseException)]
            if failed:  # each share stops at its own first bad image: answer for the first of all
                raise min(failed, key=lambda f: f.index if isinstance(f, _Unusable) else -1)
        except _Unusable as exc:
            raise exc.http from exc.__cause__
        return [parts[i % shares][i // shares] for i in range(len(images))]  # type: ignore[index]


class _Unusable(Exception):
    """Image `index` of a request cannot be used; `http` is its answer."""

    def __init__(self, index: int, http: HTTPException) -> None:
        super().__init__(http.detail)
        self.index, self.http = index, http


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


async def _multipart_images(request: Request, max_frames: int, max_bytes: int) -> tuple[list[Image], list[str]]:
    """Repeated `frames` files and optional repeated `ts` fields of a multipart/form-data body."""
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
        images = [(await u.read(), u.content_type, f"frames[{i}]")  # type: ignore[union-attr]
                  for i, u in enumerate(uploads)]
        return images, [t for t in form.getlist("ts") if isinstance(t, str)]
    finally:
        await form.close()


async def _stream_images(request: Request, max_frames: int, max_bytes: int) -> tuple[list[Image], list[str]]:
    """The images of an `application/octet-stream` frame stream (`stemcell.frame_stream`), each typed by its
    magic bytes, and the `?ts=` values."""
    try:
        parts = split_frames(await read_body(request, max_bytes), max_frames)
    except FramingError as exc:
        raise HTTPException(exc.status, f"{FRAME_STREAM} body: {exc}") from exc
    images = []
    for i, data in enumerate(parts):
        fmt = sniff_format(data)
        if fmt is None:
            raise HTTPException(415, f"frames[{i}]: neither JPEG nor PNG (starts with {data[:4].hex()})")
        images.append((data, f"image/{fmt}", f"frames[{i}]"))
    return images, parse_timestamps(request.query_params.get("ts"))


async def batch_frames(request: Request, decoder: Decoder, max_frames: int, max_bytes: int,
                       size: int | None = None) -> Decoded:
    """`POST .../frames:batch`: multipart/form-data (repeated `frames` files, optional repeated `ts`), or
    the lean `application/octet-stream` frame stream (`stemcell.frame_stream`: length-prefixed images,
    `?ts=` comma-separated); `size`, `?w=&h=` as in `single_frame` (images of different sizes keep
    each its own)."""
    declared = _declared_size(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    _declared_length(request, max_bytes)
    if media == FRAME_STREAM:
        images, ts = await _stream_images(request, max_frames, max_bytes)
    elif media == "multipart/form-data":
        images, ts = await _multipart_images(request, max_frames, max_bytes)
    else:
        raise HTTPException(415, f"frames:batch takes multipart/form-data with repeated 'frames' files or "
                                 f"{FRAME_STREAM} (length-prefixed images), got {media or 'nothing'!r}")
    stamps = [_timestamp(t) for t in ts]
    if stamps and len(stamps) != len(images):
        raise HTTPException(422, f"{len(stamps)} ts values for {len(images)} frames")
    decoded = await decoder.decode_all(images, size)
    frames, sizes = [f for f, _ in decoded], [own for _, own in decoded]
    return Decoded(frames, stamps or None, [declared] * len(frames) if declared else sizes)  # type: ignore[arg-type]

"""Checking and decoding camera images before they reach a model.

Everything here runs on bytes from the network, so the order matters: the declared type, the
magic bytes and the header's dimensions are checked *before* the full decode, because a 100 KB
PNG can declare 50 000 x 50 000 pixels (a decompression bomb) and OpenCV would try to allocate
them.  Truncated or corrupt files are rejected too: libjpeg "decodes" a cut JPEG by painting the
missing part grey and only *warns*, which would silently feed the models garbage. A missing end
marker is caught by looking at the tail; a scan cut short with the end marker put back (or any
other corrupt entropy-coded data) only by the decoder, so JPEGs are decoded with libjpeg-turbo
through `simplejpeg` in strict mode, which turns libjpeg's warnings into errors (OpenCV's and
Pillow's decoders both swallow them).

Errors carry a `reason` the HTTP layer maps to a status code (415 / 400 / 413); this module knows
nothing about HTTP.

It also holds THE resize (`resize_frames`): every way a frame reaches a model (an HTTP upload, a
batch, the executor's direct API, the pull ingest, training, a client shrinking its upload) goes
through it, so a frame gives the same scores whichever way it came in. A frame for a model of
`size` px is decoded straight at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
>= `size` (`decode_for_model`): libjpeg then skips most of the IDCT and the colour conversion, and
the resize after it works on a few hundred pixels per side instead of 1920.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import simplejpeg

ImageFormat = Literal["jpeg", "png"]
Reason = Literal["unsupported", "corrupt", "too_large"]

CONTENT_TYPES: dict[str, ImageFormat] = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field (RSTn, SOI, TEM).
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}


class ImageError(ValueError):
    """An image that cannot be used; `reason` says why in a way that maps onto HTTP statuses."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """What a single image may cost before we spend CPU and memory on it."""

    max_bytes: int = 8 * 1024 * 1024  # encoded size
    max_pixels: int = 4096 * 4096  # width * height as declared in the header


def format_from_content_type(content_type: str | None) -> ImageFormat:
    """`image/jpeg` / `image/png` (parameters such as `; q=1` ignored) -> format, else 415-style error."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in CONTENT_TYPES:
        raise ImageError("unsupported", f"Content-Type must be image/jpeg or image/png, got {media or 'nothing'!r}")
    return CONTENT_TYPES[media]


def sniff_format(data: bytes) -> ImageFormat | None:
    """The format the magic bytes announce, or None for anything else."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI + b"\xff"):
        return "jpeg"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    # signature(8) + IHDR length(4) + b"IHDR"(4) + width(4) + height(4)
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("corrupt", "PNG has no IHDR header (truncated or not a PNG)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the marker segments from SOI to the first start-of-frame and read its dimensions."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError("corrupt", f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # EOI or scan data before any frame header
            break
        pos += 2 + length
    raise ImageError("corrupt", "JPEG has no frame header (truncated or not a JPEG)")


def header_size(data: bytes, fmt: ImageFormat) -> tuple[int, int]:
    """(width, height) from the header alone: cheap, and safe against decompression bombs."""
    return _png_size(data) if fmt == "png" else _jpeg_size(data)


def _check_complete(data: bytes, fmt: ImageFormat) -> None:
    # Cameras sometimes pad with zeros after the end marker; anything else after it is not ours to judge.
    tail = data.rstrip(b"\x00")
    complete = tail.endswith(_PNG_IEND) if fmt == "png" else tail.endswith(_JPEG_EOI)
    if not complete:
        raise ImageError("corrupt", f"{fmt.upper()} image is truncated (no end marker)")


def decode_image(data: bytes, content_type: str | None, limits: ImageLimits = ImageLimits(),
                 *, min_side: int | None = None) -> np.ndarray:
    """Validate and decode one JPEG/PNG into an RGB uint8 array (H, W, 3).

    Order: declared type -> size -> magic bytes (must agree with the type) -> header dimensions
    (pixel limit) -> end marker (truncation) -> strict decode (JPEG: simplejpeg, straight to RGB;
    PNG: OpenCV, BGR to RGB). With `min_side`, a JPEG is decoded at the DCT scale `dct_factor`
    picks (both sides still >= `min_side`); a PNG has no such scale and comes back whole.
    """
    return _decode_checked(data, content_type, limits, min_side)[0]


def _decode_checked(data: bytes, content_type: str | None, limits: ImageLimits,
                    min_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image`, and the image's own (height, width) read from the header it checked."""
    actual, width, height = check_image(data, content_type, limits)
    factor = dct_factor(width, height, min_side) if actual == "jpeg" and min_side else 1
    rgb = _decode_jpeg(data, -(-height // factor), -(-width // factor)) if actual == "jpeg" else _decode_png(data)
    if rgb is None or rgb.shape[:2] != (-(-height // factor), -(-width // factor)):
        raise ImageError("corrupt", f"{actual.upper()} image could not be decoded")
    return rgb[:_scaled_side(height, factor), :_scaled_side(width, factor)], (height, width)


def decode_for_model(data: bytes, content_type: str | None, size: int, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """One JPEG/PNG -> the contiguous RGB uint8 (size, size, 3) a model of input `size` takes:
    decoded at the DCT scale that keeps both sides >= `size`, then `resize_frames`."""
    return decode_sized(data, content_type, limits, size)[0]


def decode_sized(data: bytes, content_type: str | None, limits: ImageLimits = ImageLimits(),
                 size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(frame, its own (height, width)): the whole image, or with `size` the model-size frame of
    `decode_for_model`. The size comes from the header the checks already parsed (the HTTP edge
    needs it for detect boxes; reading it again cost a second header walk per frame)."""
    rgb, own = _decode_checked(data, content_type, limits, size)
    return (rgb if size is None else resize_frames(rgb, size)), own


def dct_factor(width: int, height: int, size: int) -> int:
    """The largest libjpeg DCT scale-down (8, 4, 2 or 1) after which both sides (as `_scaled_side`
    keeps them) are still >= `size`; 1920x1080 for 128 px -> 8 (240x135).
    Only powers of two: libjpeg-turbo's 3/8, 5/8... scales have no SIMD IDCT and are slower."""
    for factor in (8, 4, 2):
        if _scaled_side(width, factor) >= size and _scaled_side(height, factor) >= size:
            return factor
    return 1


def _scaled_side(side: int, factor: int) -> int:
    """How many rows (or columns) of a decode at 1/`factor` are kept: `side / factor` rounded.

    libjpeg returns ceil(side / factor); when `side` is not a multiple of `factor`, the last one
    averages a few image rows with the encoder's padding (the edge row repeated to fill the block).
    Kept, it counts as a whole scaled row, so the resize after it stretches the frame by up to 7/8
    of a scaled pixel: a 481x643 JPEG for a 32 px model then came out 4.5 grey levels (mean) from
    the full decode's area resize, against 1.7 for 480x640. Dropped when it is less than half image,
    the shift is at most half a scaled pixel."""
    return max(1, (side + factor // 2) // factor)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """THE resize: uint8 (N,H,W,3) or (H,W,3) -> contiguous uint8 of the same rank at (size, size).

    The rule the training data sources apply (`stemcell.data.dataset.resize_square` is this
    function): the whole frame stretched to the square input (no crop, aspect not kept),
    area-averaged (OpenCV's INTER_AREA: a downscale averages every source pixel instead of sampling a
    few), in uint8 so the result travels as bytes. Channel order is the caller's (RGB or BGR alike).
    Frames already at (size, size) come back as they are (made contiguous).
    """
    if frames.dtype != np.uint8 or frames.shape[-1:] != (3,) or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 RGB frames (N,H,W,3) or (H,W,3), got {frames.dtype} {frames.shape}")
    if frames.shape[-3:-1] == (size, size):
        return np.ascontiguousarray(frames)
    if frames.ndim == 3:
        return np.ascontiguousarray(cv2.resize(frames, (size, size), interpolation=cv2.INTER_AREA))
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):  # OpenCV resizes one image at a time (and without the GIL)
        cv2.resize(frame, (size, size), dst=out[i], interpolation=cv2.INTER_AREA)
    return out


def check_image(data: bytes, content_type: str | None, limits: ImageLimits = ImageLimits()) -> tuple[ImageFormat, int, int]:
    """Every check of `decode_image` short of decoding: (format, width, height), or ImageError.
    A GPU decoder (`stemcell.accel.decode`) runs these first, so it refuses what the CPU path refuses."""
    declared = format_from_content_type(content_type)
    if len(data) > limits.max_bytes:
        raise ImageError("too_large", f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    actual = sniff_format(data)
    if actual is None:
        raise ImageError("corrupt", "body is not a JPEG or PNG image")  # bad bytes (400), not a bad type (415)
    if actual != declared:
        raise ImageError("unsupported", f"Content-Type says {declared} but the body is a {actual} image")
    width, height = header_size(data, actual)
    if width == 0 or height == 0:
        raise ImageError("corrupt", f"{actual.upper()} header declares an empty image ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError("too_large", f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    _check_complete(data, actual)
    return actual, width, height


def _decode_jpeg(data: bytes, min_height: int = 0, min_width: int = 0) -> np.ndarray:
    # simplejpeg picks the smallest M/8 scale meeting both minimums: the exact ceil(side/factor)
    # of a power-of-two factor selects that factor and no other.
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_height=min_height, min_width=min_width)
    except ValueError as exc:  # libjpeg's error or (strict) warning, e.g. "premature end of data segment"
        raise ImageError("corrupt", f"JPEG image is corrupt: {str(exc)[:200]}") from exc


def _decode_png(data: bytes) -> np.ndarray | None:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _encode(rgb: np.ndarray, ext: str, params: list[int]) -> bytes:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the frame as {ext}")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes (what cameras send)."""
    return _encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB uint8 (H, W, 3) -> PNG bytes (lossless, for tests and exact comparisons)."""
    return _encode(rgb, ".png", [])

"""The lean body of `POST /cameras/{id}/frames:batch`: length-prefixed images, no multipart.

`Content-Type: application/octet-stream`; the body is the frames one after another, each a JPEG or
PNG (told apart by its magic bytes) preceded by its length in bytes as a 4-byte big-endian unsigned
integer:

    [len 0 (4 bytes)][image 0 (len 0 bytes)][len 1][image 1] ...

Capture times, when sent, go in the query (`?ts=1.0,1.033,...`, one per frame, comma-separated), and
`?w=&h=` means what it means for multipart. Why: a multipart body is parsed byte by byte in Python
(boundary search, per-part headers, spooled file objects); profiled on a 1080p batch of 8 frames
that parse cost more CPU in the ingress replica than decoding the frames (README, issue 15). Here
the server reads 4 bytes per frame and slices. Multipart stays accepted.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

MEDIA_TYPE = "application/octet-stream"
_PREFIX = struct.Struct(">I")


class FramingError(ValueError):
    """A body that is not a well-formed frame stream; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def encode_frames(images: Sequence[bytes]) -> bytes:
    """Encoded images (JPEG/PNG bytes) -> one frame-stream body."""
    return b"".join(_PREFIX.pack(len(image)) + image for image in images)


def split_frames(body: bytes, max_frames: int) -> list[bytes]:
    """A frame-stream body -> its images, in order. Fails (400) on an empty body, an empty frame or a
    length that runs past the body's end, and (413) past `max_frames` frames, before slicing any more."""
    if not body:
        raise FramingError(400, "empty body: send one or more frames, each a 4-byte big-endian length, then "
                                "that many bytes of JPEG/PNG")
    frames: list[bytes] = []
    pos = 0
    while pos < len(body):
        if len(frames) == max_frames:
            raise FramingError(413, f"more than {max_frames} frames in one request")
        if pos + _PREFIX.size > len(body):
            raise FramingError(400, f"frame {len(frames)}: {len(body) - pos} byte(s) left where a 4-byte length "
                                    "was expected (truncated body)")
        (length,) = _PREFIX.unpack_from(body, pos)
        pos += _PREFIX.size
        if length == 0:
            raise FramingError(400, f"frame {len(frames)}: declares 0 bytes")
        if pos + length > len(body):
            raise FramingError(400, f"frame {len(frames)}: declares {length} bytes, only {len(body) - pos} left "
                                    "(truncated body, or a length that is not 4-byte big-endian)")
        frames.append(body[pos:pos + length])
        pos += length
    return frames


def parse_timestamps(text: str | None) -> list[str]:
    """`?ts=` of a frame-stream request -> its values as given (empty when absent): one per frame."""
    return [] if text is None else text.split(",")

"""stemcell/frame_stream.py: the length-prefixed frames:batch body splits exactly, and every malformed body
is refused with the status and a message that says what is wrong."""
from __future__ import annotations

import struct

import pytest

from stemcell.frame_stream import FramingError, encode_frames, parse_timestamps, split_frames


def _refusal(body: bytes, max_frames: int = 8) -> FramingError:
    with pytest.raises(FramingError) as err:
        split_frames(body, max_frames)
    return err.value


def test_frames_come_back_as_sent_in_order() -> None:
    images = [b"\xff\xd8\xff" + bytes([i]) * (i + 1) for i in range(5)]
    body = encode_frames(images)
    assert len(body) == sum(4 + len(i) for i in images)
    assert split_frames(body, max_frames=5) == images
    assert body[:4] == struct.pack(">I", len(images[0]))  # the documented prefix: 4 bytes, big-endian


def test_malformed_bodies_are_refused_with_a_reason() -> None:
    empty = _refusal(b"")
    assert empty.status == 400 and "empty body" in str(empty)
    cut_prefix = _refusal(encode_frames([b"abc"]) + b"\x00\x00")
    assert cut_prefix.status == 400 and "frame 1" in str(cut_prefix) and "truncated" in str(cut_prefix)
    past_end = _refusal(struct.pack(">I", 100) + b"x" * 10)
    assert past_end.status == 400 and "declares 100 bytes, only 10 left" in str(past_end)
    little_endian = _refusal(struct.pack("<I", 3) + b"abc")  # a client that got the byte order wrong
    assert little_endian.status == 400 and "big-endian" in str(little_endian)
    zero = _refusal(encode_frames([b"abc"]) + struct.pack(">I", 0))
    assert zero.status == 400 and "frame 1: declares 0 bytes" in str(zero)


def test_too_many_frames_is_413_before_the_rest_is_sliced() -> None:
    err = _refusal(encode_frames([b"a"] * 3) + b"\xff", max_frames=3)  # the 4th frame is not even well formed
    assert err.status == 413 and "more than 3 frames" in str(err)


def test_timestamps_come_from_one_comma_separated_query_value() -> None:
    assert parse_timestamps(None) == []
    assert parse_timestamps("1.5,2,2.5") == ["1.5", "2", "2.5"]

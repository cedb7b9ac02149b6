"""app/images.py: request bodies are read within their limits and every bad input is a 4xx."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi import HTTPException
from pydantic import BaseModel
from starlette.requests import Request

from app.executors import same_size_runs
from app.images import DECODE_IN_THREAD_BYTES, Decoder, batch_frames, json_body, read_body, single_frame
from stemcell.frame_stream import encode_frames
from stemcell.imaging import ImageLimits, decode_for_model, encode_jpeg

DECODER = Decoder(ImageLimits(64 * 1024, 256 * 256))  # the replica's decoding: limits and threads


def _request(body: bytes, headers: dict[str, str], query: str = "", chunk: int = 1024) -> Request:
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive() -> dict[str, object]:
        part = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": part, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def _status(coro) -> int:  # noqa: ANN001 - an awaitable that should fail
    with pytest.raises(HTTPException) as err:
        asyncio.run(coro)
    return err.value.status_code


def test_body_limits_hold_with_and_without_content_length() -> None:
    assert asyncio.run(read_body(_request(b"x" * 100, {"content-length": "100"}), 100)) == b"x" * 100
    assert _status(read_body(_request(b"x" * 10, {"content-length": "101"}), 100)) == 413  # refused before reading
    assert _status(read_body(_request(b"x" * 5000, {}), 100)) == 413  # chunked: counted while reading
    assert _status(read_body(_request(b"x", {"content-length": "-1"}), 100)) == 400


class _Body(BaseModel):
    name: str


def test_json_body_names_the_problem() -> None:
    assert asyncio.run(json_body(_request(b'{"name": "a"}', {}), _Body)).name == "a"
    with pytest.raises(HTTPException) as err:
        asyncio.run(json_body(_request(b'{"nome": "a"}', {}), _Body))
    assert err.value.status_code == 422 and "name" in err.value.detail


def _jpeg(seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (32, 48, 3), dtype=np.uint8))


def test_single_frame_and_its_timestamp() -> None:
    decoded = asyncio.run(single_frame(_request(_jpeg(0), {"content-type": "image/jpeg"}, "ts=1.5"), DECODER))
    assert decoded.frames[0].shape == (32, 48, 3) and decoded.timestamps == [1.5]
    assert _status(single_frame(_request(_jpeg(0), {"content-type": "image/jpeg"}, "ts=nan"), DECODER)) == 422
    assert _status(single_frame(_request(_jpeg(0)[:40], {"content-type": "image/jpeg"}), DECODER)) == 400  # truncated
    assert _status(single_frame(_request(b"not an image", {"content-type": "image/jpeg"}), DECODER)) == 400  # README
    assert _status(single_frame(_request(_jpeg(0), {"content-type": "text/plain"}), DECODER)) == 415  # wrong type


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = "b0undary"
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: image/jpeg\r\n" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_batch_frames_in_order_with_timestamps_and_limits() -> None:
    body, headers = _multipart([("frames", "a.jpg", _jpeg(1)), ("frames", "b.jpg", _jpeg(2)),
                                ("ts", None, b"1"), ("ts", None, b"2")])
    decoded = asyncio.run(batch_frames(_request(body, headers), DECODER, max_frames=4, max_bytes=1 << 20))
    assert len(decoded.frames) == 2 and decoded.timestamps == [1.0, 2.0]
    assert _status(batch_frames(_request(body, headers), DECODER, max_frames=1, max_bytes=1 << 20)) == 413
    assert _status(batch_frames(_request(body, headers), DECODER, max_frames=4, max_bytes=100)) == 413
    odd, odd_headers = _multipart([("frames", "a.jpg", _jpeg(1)), ("other", None, b"x")])
    assert _status(batch_frames(_request(odd, odd_headers), DECODER, max_frames=4, max_bytes=1 << 20)) == 400
    few, few_headers = _multipart([("frames", "a.jpg", _jpeg(1)), ("ts", None, b"1"), ("ts", None, b"2")])
    assert _status(batch_frames(_request(few, few_headers), DECODER, max_frames=4, max_bytes=1 << 20)) == 422
    assert _status(batch_frames(_request(body, {"content-type": "image/jpeg"}), DECODER, 4, 1 << 20)) == 415


def test_frames_come_out_at_the_model_size_when_given_one() -> None:
    """The ingress asks for the executor's input size: the DCT-scaled decode, then the one resize."""
    big = encode_jpeg(np.random.default_rng(3).integers(0, 256, (200, 250, 3), dtype=np.uint8))
    assert len(big) > DECODE_IN_THREAD_BYTES and len(_jpeg(0)) < DECODE_IN_THREAD_BYTES  # decode threads, and inline
    single = asyncio.run(single_frame(_request(big, {"content-type": "image/jpeg"}), DECODER, 24))
    assert np.array_equal(single.frames[0], decode_for_model(big, "image/jpeg", 24))
    assert single.frame_size == (200, 250)  # its own size, read from the header: detect boxes come back in it
    other = encode_jpeg(np.random.default_rng(4).integers(0, 256, (200, 250, 3), dtype=np.uint8))
    body, headers = _multipart([("frames", "a.jpg", big), ("frames", "b.jpg", other)])
    batch = asyncio.run(batch_frames(_request(body, headers), DECODER, max_frames=4, max_bytes=1 << 20, size=24))
    assert [f.shape for f in batch.frames] == [(24, 24, 3)] * 2  # one size: one stacked item for the executor
    assert np.array_equal(batch.frames[0], single.frames[0]) and batch.frame_size == (200, 250)


def test_a_batch_of_images_of_different_sizes_keeps_each_its_own_size() -> None:
    """Each frame of a batch keeps its own (height, width): the pool sends one executor item per size."""
    big = encode_jpeg(np.random.default_rng(3).integers(0, 256, (200, 250, 3), dtype=np.uint8))
    body, headers = _multipart([("frames", "a.jpg", big), ("frames", "b.jpg", _jpeg(1))])
    batch = asyncio.run(batch_frames(_request(body, headers), DECODER, max_frames=4, max_bytes=1 << 20, size=24))
    assert batch.frame_sizes == [(200, 250), (32, 48)] and batch.frame_size == (32, 48)
    assert [f.shape for f in batch.frames] == [(24, 24, 3)] * 2


def test_same_size_runs_split_a_request_in_order() -> None:
    assert same_size_runs(["a", "a", "b", "a"]) == [(0, 2), (2, 3), (3, 4)]
    assert same_size_runs([((24, 24, 3), (10, 20))] * 3) == [(0, 3)]
    assert same_size_runs([]) == []


def test_declared_size_is_the_frames_own_size_when_the_client_resized() -> None:
    """`?w=&h=`: a client that resized before upload names the size it had; both or neither, positive, bounded."""
    jpeg = {"content-type": "image/jpeg"}
    declared = asyncio.run(single_frame(_request(_jpeg(0), jpeg, "w=1920&h=1080"), DECODER, 24))
    assert declared.frames[0].shape == (24, 24, 3) and declared.frame_size == (1080, 1920)
    assert asyncio.run(single_frame(_request(_jpeg(0), jpeg), DECODER, 24)).frame_size == (32, 48)
    body, headers = _multipart([("frames", "a.jpg", _jpeg(1)), ("frames", "b.jpg", _jpeg(2))])
    batch = asyncio.run(batch_frames(_request(body, headers, "w=480&h=320"), DECODER, 4, 1 << 20, 24))
    assert batch.frame_size == (320, 480)
    for query in ("w=1920", "h=5", "w=0&h=5", "w=-3&h=5", "w=1.5&h=5", "w=x&h=5", "w=65536&h=5", "w=%C2%B2&h=5"):
        assert _status(single_frame(_request(_jpeg(0), jpeg, query), DECODER, 24)) == 422, query


STREAM = {"content-type": "application/octet-stream"}


def test_a_frame_stream_batch_decodes_like_multipart() -> None:
    """The lean frames:batch body (`stemcell.frame_stream`) gives the very frames multipart gives, in order,
    also when its large images are split over several decode threads."""
    rng = np.random.default_rng(5)
    images = [encode_jpeg(rng.integers(0, 256, (200, 250 + 10 * i, 3), dtype=np.uint8)) for i in range(5)]
    assert min(map(len, images)) > DECODE_IN_THREAD_BYTES  # the threaded path
    two_threads = Decoder(ImageLimits(1 << 20, 1 << 20), threads=2)
    stream = asyncio.run(batch_frames(_request(encode_frames(images), STREAM, "ts=1,2,3,4,5"), two_threads, 8,
                                      1 << 22, 24))
    body, headers = _multipart([("frames", f"{i}.jpg", image) for i, image in enumerate(images)])
    multipart = asyncio.run(batch_frames(_request(body, headers), two_threads, 8, 1 << 22, 24))
    assert stream.timestamps == [1.0, 2.0, 3.0, 4.0, 5.0] and multipart.timestamps is None
    assert stream.frame_sizes == multipart.frame_sizes == [(200, 250 + 10 * i) for i in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(stream.frames, multipart.frames, strict=True))


def _detail(coro) -> tuple[int, str]:  # noqa: ANN001 - an awaitable that should fail
    with pytest.raises(HTTPException) as err:
        asyncio.run(coro)
    return err.value.status_code, err.value.detail


def test_bad_frame_stream_bodies_are_4xx_with_a_clear_message() -> None:
    good = _jpeg(1)
    big = encode_jpeg(np.random.default_rng(6).integers(0, 256, (200, 250, 3), dtype=np.uint8))
    two_threads = Decoder(ImageLimits(1 << 20, 1 << 20), threads=2)

    def batch(body: bytes, query: str = "", decoder: Decoder = DECODER, max_frames: int = 4):  # noqa: ANN202
        return batch_frames(_request(body, STREAM, query), decoder, max_frames, 1 << 20)

    assert _detail(batch(b"")) == (400, "application/octet-stream body: empty body: send one or more frames, each "
                                        "a 4-byte big-endian length, then that many bytes of JPEG/PNG")
    status, detail = _detail(batch(encode_frames([good])[:-10]))
    assert status == 400 and "frame 0: declares" in detail
    assert _detail(batch(encode_frames([good] * 5)))[0] == 413
    assert _detail(batch(encode_frames([good, b"GIF89a..."]))) == (415, "frames[1]: neither JPEG nor PNG (starts "
                                                                         "with 47494638)")
    status, detail = _detail(batch(encode_frames([good, good]), "ts=1"))
    assert status == 422 and "1 ts values for 2 frames" in detail
    assert _detail(batch(encode_frames([good]), "ts=soon"))[0] == 422
    # frames 1 and 2 are corrupt, and decoded on different threads: the answer names the first
    status, detail = _detail(batch(encode_frames([big, big[:-200], big[:-200], big]), decoder=two_threads))
    assert status == 400 and detail.startswith("frames[1]: ")
    status, detail = _detail(batch_frames(_request(encode_frames([good]), {"content-type": "text/plain"}),
                                          DECODER, 4, 1 << 20))
    assert status == 415 and "multipart/form-data" in detail and "application/octet-stream" in detail

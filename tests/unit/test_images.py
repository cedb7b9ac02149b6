"""Image validation: everything the HTTP layer rejects must be rejected here, for the right reason."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from stemcell.imaging import (
    ImageError,
    ImageLimits,
    decode_image,
    encode_jpeg,
    encode_png,
    format_from_content_type,
    header_size,
    sniff_format,
)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A smooth image (JPEG keeps smooth images close) with distinct R, G, B so a channel swap shows."""
    y, x = np.mgrid[0:40, 0:60]
    return np.dstack([x * 4, y * 6, np.full_like(x, 30)]).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny, complete PNG whose header declares width x height (the pixels never exist)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def test_png_round_trip_is_exact_and_rgb(rgb: np.ndarray) -> None:
    out = decode_image(encode_png(rgb), "image/png")
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_decodes_to_rgb_not_bgr(rgb: np.ndarray) -> None:
    out = decode_image(encode_jpeg(rgb, quality=95), "image/jpeg; charset=binary").astype(int)
    assert out.shape == rgb.shape
    assert np.abs(out - rgb).mean() < 3.0
    assert np.abs(out - rgb[..., ::-1]).mean() > 20.0  # a BGR result would match the swapped image


def test_header_size_reads_dimensions_without_decoding(rgb: np.ndarray) -> None:
    assert header_size(encode_png(rgb), "png") == (60, 40)
    assert header_size(encode_jpeg(rgb), "jpeg") == (60, 40)
    ok, progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and header_size(progressive.tobytes(), "jpeg") == (60, 40)


def test_grey_and_alpha_pngs_become_three_channels(rgb: np.ndarray) -> None:
    for array in (rgb[..., 0], np.dstack([rgb, rgb[..., :1]])):
        ok, buf = cv2.imencode(".png", array)
        assert ok
        assert decode_image(buf.tobytes(), "image/png").shape == (40, 60, 3)


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream", "image/gif", "image/webp"])
def test_unsupported_content_types(content_type: str | None) -> None:
    with pytest.raises(ImageError) as err:
        format_from_content_type(content_type)
    assert err.value.reason == "unsupported"


def test_non_image_bytes_are_corrupt_not_an_unsupported_type() -> None:
    for body in (b"hello world", b"", b"GIF89a" + b"\x00" * 40, b"\xff\xd8"):
        with pytest.raises(ImageError) as err:
            decode_image(body, "image/jpeg")
        assert err.value.reason == "corrupt"  # HTTP 400: the README's status for bytes that are not an image
        assert sniff_format(body) is None


def test_type_and_body_must_agree(rgb: np.ndarray) -> None:
    with pytest.raises(ImageError, match="says png but the body is a jpeg") as err:
        decode_image(encode_jpeg(rgb), "image/png")
    assert err.value.reason == "unsupported"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_images_are_corrupt(rgb: np.ndarray, fmt: str, keep: float) -> None:
    data = encode_jpeg(rgb) if fmt == "jpeg" else encode_png(rgb)
    with pytest.raises(ImageError) as err:
        decode_image(data[: int(len(data) * keep)], f"image/{fmt}")
    assert err.value.reason == "corrupt"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_a_cut_scan_with_the_end_marker_put_back_is_corrupt(keep: float) -> None:
    """libjpeg paints the missing part grey and only warns; OpenCV and Pillow accept such a file."""
    noisy = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)  # no flat tail to hide in
    data = encode_jpeg(noisy)
    with pytest.raises(ImageError, match="JPEG image is corrupt") as err:
        decode_image(data[: int(len(data) * keep)] + b"\xff\xd9", "image/jpeg")
    assert err.value.reason == "corrupt"


def test_grey_and_progressive_jpegs_decode_to_rgb(rgb: np.ndarray) -> None:
    grey = cv2.imencode(".jpg", rgb[..., 0])[1].tobytes()
    progressive = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert decode_image(grey, "image/jpeg").shape == (40, 60, 3)
    decoded = decode_image(progressive, "image/jpeg")
    assert decoded.shape == (40, 60, 3) and np.abs(decoded.astype(int) - rgb).mean() < 8


def test_truncated_inside_the_header_is_corrupt(rgb: np.ndarray) -> None:
    with pytest.raises(ImageError, match="no frame header") as err:
        decode_image(encode_jpeg(rgb)[:12], "image/jpeg")
    assert err.value.reason == "corrupt"
    with pytest.raises(ImageError, match="IHDR"):
        decode_image(encode_png(rgb)[:20], "image/png")


def test_zero_padding_after_the_end_marker_is_accepted(rgb: np.ndarray) -> None:
    assert decode_image(encode_jpeg(rgb) + b"\x00" * 16, "image/jpeg").shape == (40, 60, 3)


def test_byte_limit(rgb: np.ndarray) -> None:
    data = encode_png(rgb)
    assert decode_image(data, "image/png", ImageLimits(max_bytes=len(data))).shape == (40, 60, 3)
    with pytest.raises(ImageError) as err:
        decode_image(data, "image/png", ImageLimits(max_bytes=len(data) - 1))
    assert err.value.reason == "too_large"


def test_pixel_limit_stops_a_decompression_bomb_before_decoding() -> None:
    bomb = _png_bomb(50_000, 50_000)  # 2.5 G pixels declared in a ~100 byte file
    assert len(bomb) < 200
    with pytest.raises(ImageError, match="50000x50000") as err:
        decode_image(bomb, "image/png")
    assert err.value.reason == "too_large"


def test_pixel_limit_applies_to_jpeg(rgb: np.ndarray) -> None:
    data = encode_jpeg(rgb)
    assert decode_image(data, "image/jpeg", ImageLimits(max_pixels=60 * 40)).shape == (40, 60, 3)
    with pytest.raises(ImageError) as err:
        decode_image(data, "image/jpeg", ImageLimits(max_pixels=60 * 40 - 1))
    assert err.value.reason == "too_large"


def test_empty_dimensions_are_corrupt() -> None:
    with pytest.raises(ImageError, match="empty image") as err:
        decode_image(_png_bomb(0, 10), "image/png")
    assert err.value.reason == "corrupt"


def test_garbage_after_a_valid_header_is_corrupt(rgb: np.ndarray) -> None:
    data = bytearray(encode_png(rgb))
    data[40:-12] = bytes(len(data) - 52)  # keep signature, IHDR and IEND; zero the pixel data
    with pytest.raises(ImageError) as err:
        decode_image(bytes(data), "image/png")
    assert err.value.reason == "corrupt"


def test_encoders_refuse_wrong_arrays() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_jpeg(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))

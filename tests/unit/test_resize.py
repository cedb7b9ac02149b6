"""The one resize, and decoding straight at the DCT scale a model needs (`stemcell.imaging`)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import simplejpeg
import torch

from stemcell.data.dataset import resize_square
from stemcell.imaging import dct_factor, decode_for_model, decode_image, encode_jpeg, encode_png, resize_frames
from stemcell.models import normalised, to_input


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus blocks: compresses like a camera view and shows any resize difference."""
    y, x = np.mgrid[0:height, 0:width]
    blocks = np.random.default_rng(seed).integers(0, 120, (height // 40 + 1, width // 40 + 1))[y // 40, x // 40]
    return np.stack([x * 255 // width, y * 255 // height, blocks + (x + y) % 90], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("width", "height", "size", "factor"), [
    (1920, 1080, 128, 8),  # 240x135
    (1920, 1080, 224, 4),  # 480x270
    (1280, 720, 128, 4),  # 320x180 (1/8 would leave 90 rows)
    (1280, 720, 224, 2),  # 640x360
    (641, 481, 128, 2),  # odd: 321x241, while 1/4 gives 161x121 (< 128)
    (1023, 1023, 128, 8),  # 127.9 rows at 1/8, rounded to 128: just enough
    (1017, 1017, 128, 4),  # 127.1 at 1/8: libjpeg gives 128 but the last is mostly padding, so 1/4
    (100, 90, 128, 1),  # smaller than the model: no scale at all
])
def test_dct_factor_is_the_smallest_scale_still_at_least_the_model_input(width: int, height: int, size: int,
                                                                        factor: int) -> None:
    assert dct_factor(width, height, size) == factor


@pytest.mark.parametrize(("height", "width", "size"), [(1080, 1920, 64), (720, 1280, 224), (481, 641, 128)])
def test_jpeg_is_decoded_at_that_scale_and_is_libjpegs_own_scaled_decode(height: int, width: int, size: int) -> None:
    data = encode_jpeg(_scene(height, width))
    factor = dct_factor(width, height, size)
    scaled = decode_image(data, "image/jpeg", min_side=size)
    assert scaled.shape == (-(-height // factor), -(-width // factor), 3)
    assert np.array_equal(scaled, simplejpeg.decode_jpeg(data, "RGB", min_factor=factor, min_height=scaled.shape[0],
                                                         min_width=scaled.shape[1]))
    # a reduced IDCT is a good downscale: close to decoding everything and averaging it down
    full = cv2.resize(decode_image(data, "image/jpeg"), scaled.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(scaled.astype(int) - full).mean() < 3.0
    model = decode_for_model(data, "image/jpeg", size)
    assert model.shape == (size, size, 3) and model.flags.c_contiguous
    assert np.array_equal(model, resize_frames(scaled, size))


def test_a_scaled_row_that_is_mostly_block_padding_is_dropped() -> None:
    """481x643 at 1/8: libjpeg gives 61x81, the last row and column averaging 1 and 3 image rows with the
    encoder's padding. Kept, they stretch the frame; dropped, the model input is closer to what the whole
    decode, area-resized (the training rule), gives."""
    data = encode_jpeg(_scene(481, 643))
    libjpeg = simplejpeg.decode_jpeg(data, "RGB", min_factor=8, min_height=61, min_width=81)
    assert libjpeg.shape == (61, 81, 3) and dct_factor(643, 481, 32) == 8
    scaled = decode_image(data, "image/jpeg", min_side=32)
    assert np.array_equal(scaled, libjpeg[:60, :80])  # 480 of 481 rows, 640 of 643 columns
    truth = resize_frames(decode_image(data, "image/jpeg"), 32).astype(int)
    kept = np.abs(resize_frames(np.ascontiguousarray(libjpeg), 32).astype(int) - truth).mean()
    dropped = np.abs(decode_for_model(data, "image/jpeg", 32).astype(int) - truth).mean()
    assert dropped < 0.75 * kept
    even = encode_jpeg(_scene(480, 640))  # whole blocks: nothing to drop
    assert decode_image(even, "image/jpeg", min_side=32).shape == (60, 80, 3)


def test_png_and_grey_jpeg_come_whole_then_resized() -> None:
    rgb = _scene(97, 131)
    png = encode_png(rgb)
    assert np.array_equal(decode_image(png, "image/png", min_side=16), rgb)  # PNG has no reduced decode
    assert np.array_equal(decode_for_model(png, "image/png", 16), resize_frames(rgb, 16))
    ok, grey = cv2.imencode(".jpg", rgb[..., 1])
    assert ok
    frame = decode_for_model(grey.tobytes(), "image/jpeg", 32)
    assert frame.shape == (32, 32, 3) and np.array_equal(frame[..., 0], frame[..., 2])


def test_resize_is_the_area_average_the_training_data_gets() -> None:
    """The whole frame, stretched to the square, each output pixel the mean of the source pixels it
    covers (exactly the 4x4 block means at a 4x reduction), as the training data sources resize."""
    frames = np.stack([_scene(256, 192, seed) for seed in range(3)])
    out = resize_frames(frames, 64)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    square = frames[:, :192, :, :]  # 192x192 -> 48: 4x4 blocks exactly
    means = square.reshape(3, 48, 4, 48, 4, 3).mean(axis=(2, 4))
    assert np.abs(resize_frames(square, 48).astype(float) - means).max() <= 0.5 + 1e-9  # rounded, never further
    assert np.array_equal(out[1], resize_frames(frames[1], 64))  # a frame alone == the same frame in a batch
    assert np.array_equal(out[1], resize_square(frames[1], 64))  # what training frames get
    read_only = frames.copy()
    read_only.flags.writeable = False  # as frames arrive from Ray's object store
    assert np.array_equal(resize_frames(read_only, 64), out)
    assert resize_frames(frames[0], 300).shape == (300, 300, 3)  # smaller than the model: upscaled too
    assert resize_frames(out, 64) is out  # already at size: no copy, no change
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_frames(frames.astype(np.float32), 64)


def test_to_input_resizes_with_the_same_function() -> None:
    """Resized where the frame entered (ingress, client) or in `to_input`: the same model input."""
    frame = _scene(1080, 1920)
    direct = to_input(frame, 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    entered = to_input(resize_frames(frame, 64), 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.equal(direct, entered)
    manual = normalised(torch.from_numpy(resize_frames(frame, 64)).permute(2, 0, 1)[None], None,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.equal(direct, manual)

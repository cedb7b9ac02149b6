"""mp4 + Parquet export round trip and open_source over files, synthetic cameras and bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemcell.world import World, WorldConfig, export_camera, open_source, read_labels

CONFIG = WorldConfig(seed=3, num_cameras=2, duration_s=8.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return export_camera(World(CONFIG).camera(1), tmp_path_factory.mktemp("export"), start=10, stop=50)


def test_mp4_round_trip_frames_close_to_originals(exported: tuple[Path, Path]) -> None:
    mp4, _ = exported
    cam = World(CONFIG).camera(1)
    with open_source(mp4) as source:
        assert source.fps == pytest.approx(10.0)
        decoded = list(source)
    assert len(decoded) == 40
    for j, (frame, ts) in enumerate(decoded):
        assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
        assert ts == pytest.approx(j / 10.0)
        assert np.abs(frame.astype(np.int16) - cam.frame(10 + j).astype(np.int16)).mean() < 12
    # RGB order survives (a BGR mix-up would swap channel means)
    original = cam.frames(range(10, 50)).reshape(-1, 3).mean(0)
    got = np.stack([f for f, _ in decoded]).reshape(-1, 3).mean(0)
    assert np.abs(original - got).max() < 4


def test_parquet_labels_round_trip(exported: tuple[Path, Path]) -> None:
    _, parquet = exported
    cam = World(CONFIG).camera(1)
    labels = read_labels(parquet)
    assert labels.camera == 1
    assert labels.frames.tolist() == list(range(10, 50))
    assert np.allclose(labels.ts, np.arange(10, 50) / 10.0)
    assert list(labels.labels) == [cam.labels(i) for i in range(10, 50)]
    assert np.array_equal(labels.presence(), cam.presence()[10:50])
    assert labels.world_config["seed"] == 3


def test_fps_cap_drops_frames_evenly(exported: tuple[Path, Path]) -> None:
    with open_source(exported[0], fps=5.0) as source:
        stamps = [ts for _, ts in source]
        assert source.fps == 5.0
    assert stamps == pytest.approx([0.2 * k for k in range(20)])


def test_synthetic_source_streams_world_frames() -> None:
    cam = World(WorldConfig(seed=4, num_cameras=3, height=64, width=96, duration_s=3.0)).camera(2)
    with open_source("synthetic:2?seed=4&size=64x96&duration=3") as source:
        items = list(source)
    assert len(items) == cam.num_frames == 30
    for i, (frame, ts) in enumerate(items):
        assert np.array_equal(frame, cam.frame(i)) and ts == pytest.approx(i / 10.0)


def test_closed_source_stops() -> None:
    source = open_source("synthetic:0?duration=5")
    next(source)
    source.close()
    with pytest.raises(StopIteration):
        next(source)


def test_export_rejects_bad_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        export_camera(World(CONFIG).camera(0), tmp_path, start=5, stop=5)


def test_open_source_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        open_source(tmp_path / "missing.mp4")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(ValueError, match="cannot open"):
        open_source(not_video)
    with pytest.raises(ValueError, match="cannot open"):
        open_source("rtsp://127.0.0.1:1/stream")  # nothing listens on port 1
    for spec in ("synthetic:cam", "synthetic:1?colour=red", "synthetic:1?size=8x8", "synthetic:1?size=big"):
        with pytest.raises(ValueError, match="bad synthetic source"):
            open_source(spec)
    with pytest.raises(ValueError, match="fps"):
        open_source("synthetic:0", fps=0)

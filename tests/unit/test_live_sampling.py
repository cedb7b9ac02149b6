"""Live sampling (stemcell.learning.live): the frames the serving path already decoded reach the
teacher at the ASR rate, in batches, only for cameras whose learning is on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.live_feed import LiveFeed
from stemcell.learning.live import LiveSampler, learning_apps
from stemcell.learning.rates import sample_due
from stemcell.serve_config import ServeConfig
from stemcell.state.records import CameraRecord


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _frames(n: int, size: int = 8) -> list[np.ndarray]:
    return [np.full((size, size, 3), i, dtype=np.uint8) for i in range(n)]


def test_sample_due_keeps_one_frame_per_interval() -> None:
    assert sample_due(None, 5.0, 2.0)  # nothing kept yet
    assert not sample_due(5.0, 5.4, 2.0) and sample_due(5.0, 5.5, 2.0)
    assert not sample_due(5.0, 5.9, 1.0) and sample_due(5.0, 6.0, 1.0)


def test_keeps_one_frame_per_asr_interval_and_batches_them() -> None:
    clock = Clock()
    sampler = LiveSampler(batch_size=3, max_wait_s=100.0, initial_fps=1.0, clock=clock)
    stamps = [i * 0.25 for i in range(9)]  # 4 fps stream for 2 s: ticks at 0, 1, 2 s are kept
    batch = None
    for frame, ts in zip(_frames(9), stamps):
        batch = sampler.offer("cam", [frame], [ts]) or batch
    assert batch is not None and batch.camera == "cam"
    assert batch.timestamps == (0.0, 1.0, 2.0)
    assert [int(f[0, 0, 0]) for f in batch.frames] == [0, 4, 8]
    assert sampler.offered == 9 and sampler.kept == 3


def test_the_worker_rate_changes_the_interval() -> None:
    sampler = LiveSampler(batch_size=100, max_wait_s=100.0, initial_fps=1.0, clock=Clock())
    sampler.set_rate("cam", 0.25)  # ASR throttled a static scene down
    for i, frame in enumerate(_frames(40)):
        sampler.offer("cam", [frame], [i * 0.5])
    assert sampler.kept == 5  # t = 0, 4, 8, 12, 16 of 0..19.5 s


def test_a_partial_batch_leaves_after_max_wait() -> None:
    clock = Clock()
    sampler = LiveSampler(batch_size=10, max_wait_s=5.0, clock=clock)
    assert sampler.offer("cam", _frames(1), [0.0]) is None
    clock.now = 6.0
    batch = sampler.offer("cam", _frames(1), [0.5])  # too soon to keep, but the pending one is stale
    assert batch is not None and batch.timestamps == (0.0,)


def test_muted_camera_samples_nothing_until_recheck() -> None:
    clock = Clock()
    sampler = LiveSampler(batch_size=1, recheck_s=60.0, clock=clock)
    sampler.mute("cam")
    assert sampler.offer("cam", _frames(1), [0.0]) is None and sampler.kept == 0
    clock.now = 61.0
    assert sampler.offer("cam", _frames(1), [1.0]) is not None


def test_prepare_runs_on_kept_frames_only() -> None:
    seen = []

    def prepare(frame: np.ndarray) -> np.ndarray:
        seen.append(frame.shape)
        return frame[:4, :4]

    sampler = LiveSampler(batch_size=2, prepare=prepare, clock=Clock())
    batch = None
    for i, frame in enumerate(_frames(8)):
        batch = sampler.offer("cam", [frame], [i * 0.5]) or batch
    assert len(seen) == 4 and batch is not None and batch.frames.shape == (2, 4, 4, 3)


@pytest.mark.parametrize(("flag", "default", "expected"), [
    (None, False, ()), (None, True, ("car", "person")), (True, False, ("car", "person")),
    (False, True, ()), (["person", "bus"], False, ("person",)),
])
def test_learning_apps_from_registration_or_default(flag: object, default: bool, expected: tuple[str, ...]) -> None:
    config = {} if flag is None else {"learning": flag}
    assert learning_apps(config, ["car", "person"], default) == expected


class _Teacher:
    """Stands in for the TeacherLabeler's handle: records what `label.remote` was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.label = self

    def remote(self, *args: object, **kwargs: object) -> str:
        self.calls.append(args)
        return "labels-ref"


def _feed(tmp_path: Path, live: bool, teacher_side: int | None = None) -> LiveFeed:
    config = ServeConfig.model_validate({"package_dir": str(tmp_path), "state_path": str(tmp_path / "s.db"),
                                         "learning": {"enabled": True, "live": live, "live_batch": 2,
                                                      "live_teacher_side": teacher_side}})
    return LiveFeed(config, input_size=4)


def test_feed_sends_learning_cameras_to_the_teacher_and_mutes_the_others(tmp_path: Path) -> None:
    apps = [{"app": "car", "branchpoint": 3, "fps": 1.0}, {"app": "person", "branchpoint": 3, "fps": 1.0}]
    feed, teacher = _feed(tmp_path, live=False), _Teacher()
    big = [np.zeros((12, 16, 3), np.uint8)] * 2
    batch = feed.observe("cam", big, [0.0, 1.0])
    assert batch is not None and batch.frames.shape == (2, 4, 4, 3)  # shrunk to the model's input on the way

    learning = CameraRecord("cam", {"fps": 1.0, "apps": apps, "learning": ["person"]})
    camera, run, stamps, frames, labels = feed.request(batch, learning, teacher)
    assert (camera, [a.app for a in run], stamps, labels) == ("cam", ["person"], [0.0, 1.0], "labels-ref")
    assert teacher.calls[0][1:] == (0, [0.0, 1.0]) and frames.shape == (2, 4, 4, 3)

    assert feed.request(batch, CameraRecord("cam", {"fps": 1.0, "apps": apps}), teacher) is None  # live: false
    assert feed.observe("cam", big, [5.0, 6.0]) is None and len(teacher.calls) == 1  # muted for a while


def test_a_pixel_teacher_gets_a_larger_copy_and_the_worker_model_size(tmp_path: Path) -> None:
    """`learning.live_teacher_side`: HOG-like teachers see the frame at up to that side (aspect kept,
    never enlarged); the RetrainWorker still buffers model-size frames."""
    apps = [{"app": "person", "branchpoint": 3, "fps": 1.0}]
    feed, teacher = _feed(tmp_path, live=True, teacher_side=32), _Teacher()
    rng = np.random.default_rng(0)
    big = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    batch = feed.observe("cam", big, [0.0, 1.0])
    assert batch is not None and batch.frames.shape == (2, 24, 32, 3)  # longer side 32, aspect kept
    *_, frames, _ = feed.request(batch, CameraRecord("cam", {"fps": 1.0, "apps": apps}), teacher)
    assert teacher.calls[0][0].shape == (2, 24, 32, 3) and frames.shape == (2, 4, 4, 3)
    small = _feed(tmp_path, live=True, teacher_side=256).observe("cam", big, [0.0, 1.0])
    assert small is not None and np.array_equal(small.frames, np.stack(big))  # never enlarged

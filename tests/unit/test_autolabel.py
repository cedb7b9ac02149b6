"""`stemcell label`: the video_labels table it writes, resuming, and the HOG teacher on real footage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from app.cli import main
from stemcell.learning.autolabel import LabelRun, label_videos
from stemcell.learning.teachers import FrameMeta, FrameObjects, HogPeopleTeacherConfig, OracleTeacher, build_teacher
from stemcell.world import World, WorldConfig
from stemcell.world.export import export_camera
from tests.helpers.footage import VTEST, needs_vtest, vtest_frames

WORLD = WorldConfig(seed=4, num_cameras=2, height=48, width=64, fps=10.0, duration_s=6.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two exported world cameras (mp4): frame j of cam<k>.mp4 is frame j of world camera k."""
    root = tmp_path_factory.mktemp("clips")
    world = World(WORLD)
    for k in (0, 1):
        export_camera(world.camera(k), root, name=f"cam{k}")
    (root / "cam0.parquet").unlink()
    (root / "cam1.parquet").unlink()
    return root


class _Interrupted(OracleTeacher):
    """The oracle, counting frames, that is "killed" (KeyboardInterrupt) after `calls` calls."""

    def __init__(self, calls: int | None = None) -> None:
        super().__init__(World(WORLD))
        self.calls, self.frames = calls, 0

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        if self.calls is not None:
            if self.calls == 0:
                raise KeyboardInterrupt
            self.calls -= 1
        self.frames += len(frames)
        return super().label(frames, meta)


def _run(out: Path, **kwargs: object) -> LabelRun:
    return LabelRun(out=out, every=3, teacher="oracle", batch=4, part_frames=4, **kwargs)  # type: ignore[arg-type]


def test_oracle_labels_reproduce_the_world_boxes(clips: Path, tmp_path: Path) -> None:
    """Independent check of the table: every labelled frame's rows are the world's own boxes."""
    out = tmp_path / "labels.parquet"
    summary = label_videos(_Interrupted(), str(clips), _run(out), world_cameras={"cam0": 0, "cam1": 1})
    rows = pq.read_table(out).to_pylist()
    assert summary["videos"] == 2 and summary["frames_labelled"] == 2 * 20  # frames 0, 3, ..., 57 of each
    assert set(rows[0]) == {"video", "frame", "ts", "class", "x0", "y0", "x1", "y1", "score", "camera_id"}
    world = World(WORLD)
    for k in (0, 1):
        mine = [r for r in rows if r["video"] == f"cam{k}.mp4"]
        assert sorted({r["frame"] for r in mine}) == list(range(0, 60, 3))
        assert all(r["camera_id"] == f"cam{k}" and r["ts"] == pytest.approx(r["frame"] / 10) for r in mine)
        for frame in range(0, 60, 3):
            truth = sorted((b.name, b.x0, b.y0, b.x1, b.y1) for b in world.camera(k).labels(frame).boxes)
            got = [r for r in mine if r["frame"] == frame]
            if not truth:
                assert len(got) == 1 and got[0]["class"] is None and got[0]["x0"] is None  # a labelled empty frame
            else:
                assert sorted((r["class"], r["x0"], r["y0"], r["x1"], r["y1"]) for r in got) == truth


def test_an_interrupted_run_resumes_where_it_stopped(clips: Path, tmp_path: Path) -> None:
    cameras = {"cam0": 0, "cam1": 1}
    whole = tmp_path / "whole.parquet"
    label_videos(_Interrupted(), str(clips), _run(whole), world_cameras=cameras)
    out = tmp_path / "labels.parquet"
    first = _Interrupted(calls=7)  # 7 batches of 4 frames: cam0 done (20 frames), cam1 half-way
    with pytest.raises(KeyboardInterrupt):
        label_videos(first, str(clips), _run(out), world_cameras=cameras)
    assert not out.exists() and _run(out).parts_dir.is_dir()
    with pytest.raises(ValueError, match="other every"):
        label_videos(_Interrupted(), str(clips), LabelRun(out=out, every=2, teacher="oracle"), world_cameras=cameras)
    second = _Interrupted()
    label_videos(second, str(clips), _run(out), world_cameras=cameras)
    assert first.frames == 28 and second.frames == 12  # cam1's last 12 frames: committed parts are not relabelled
    assert pq.read_table(out).equals(pq.read_table(whole)) and not _run(out).parts_dir.exists()
    with pytest.raises(ValueError, match="already exists"):
        label_videos(_Interrupted(), str(clips), _run(out), world_cameras=cameras)


def test_classes_keeps_only_the_named_ones(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "cars.parquet"
    label_videos(_Interrupted(), str(clips / "cam0.mp4"), _run(out, classes=("car",)), world_cameras={"cam0": 0})
    rows = pq.read_table(out).to_pylist()
    world = World(WORLD).camera(0)
    for frame in range(0, 60, 3):
        cars = sum(b.name == "car" for b in world.labels(frame).boxes)
        got = [r["class"] for r in rows if r["frame"] == frame]
        assert got == (["car"] * cars if cars else [None])  # other classes dropped; no car: an empty labelled frame


def test_bad_label_arguments(clips: Path, tmp_path: Path) -> None:
    teacher = _Interrupted()
    with pytest.raises(ValueError, match=r"classes \['truck'\] are not among"):
        label_videos(teacher, str(clips), _run(tmp_path / "a.parquet", classes=("truck",)))
    with pytest.raises(ValueError, match="no video files"):
        label_videos(teacher, str(tmp_path), _run(tmp_path / "a.parquet"))
    with pytest.raises(FileNotFoundError, match="video source not found"):
        label_videos(teacher, str(tmp_path / "nope.mp4"), _run(tmp_path / "a.parquet"))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 2048)
    with pytest.raises(ValueError, match="cannot open video source"):
        label_videos(teacher, str(tmp_path / "broken.mp4"), _run(tmp_path / "b.parquet"))
    with pytest.raises(ValueError, match=".parquet or .csv"):
        label_videos(teacher, str(clips), _run(tmp_path / "a.json"))


@needs_vtest
def test_hog_teacher_finds_the_walkers_of_vtest() -> None:
    """Real footage: vtest.avi has 0-5 people per frame, someone in nearly every frame."""
    frames = vtest_frames([0, 150, 400])
    plain = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people"))
    labels = plain.label(frames)
    found = [frame.count("person") for frame in labels]
    assert all(1 <= n <= 10 for n in found), found
    for frame in labels:
        boxes = frame.objects["person"].boxes
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 768).all() and (boxes[:, 3] <= 576).all()
        assert ((boxes[:, 3] - boxes[:, 1]) >= 127).all()  # nothing smaller than the 64x128 window at scale 1
    strict = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people", score_threshold=1.0)).label(frames)
    assert sum(f.count("person") for f in strict) < sum(found)
    assert all((f.objects["person"].scores > 1.0).all() for f in strict if f.count("person"))
    small = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people", scale=0.5)).label(frames)
    assert sum(f.count("person") for f in small) < sum(found)  # people shrunk below the window are missed


@needs_vtest
def test_label_command_with_the_hog_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hog.yaml"
    config.write_text("teacher: {kind: opencv_hog_people, win_stride: 16}\n")
    out = tmp_path / "labels.csv"
    assert main(["label", "--teacher", str(config), "--source", str(VTEST), "--out", str(out), "--every", "200"]) == 0
    captured = capsys.readouterr()
    assert "labelled_frames: listed" in captured.out  # the hint for training on it
    assert "795/795 frames" in captured.err  # the progress bar, on stderr
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)).to_pylist()
    assert sorted({r["frame"] for r in table}) == [0, 200, 400, 600]
    assert {r["class"] for r in table} <= {"person", None} and all(r["video"] == "vtest.avi" for r in table)
    config.write_text("teacher: {kind: opencv_hog_people, scael: 2}\n")
    assert main(["label", "--teacher", str(config), "--source", str(VTEST), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "teacher.opencv_hog_people.scael" in capsys.readouterr().err

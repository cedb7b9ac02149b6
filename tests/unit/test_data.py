"""Data sources: the synthetic world exported as video + CSV/Parquet or COCO reads back with the same
labels; every bad input is a clear error naming the file and the row or field."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch

from stemcell.config import CocoData, ImageFolderData, SyntheticData, VideoLabelsData
from stemcell.data import DataError, LoadRequest, list_sources, load_dataset, split_by_chunks
from stemcell.data.dataset import even_sample
from stemcell.world import CLASSES as WORLD_CLASSES
from stemcell.world import World, WorldConfig, export_coco, export_video_labels

WORLD = WorldConfig(seed=3, num_cameras=2, height=32, width=32, fps=10, duration_s=30)
REQUEST = LoadRequest(frames_per_video=40, input_size=32, world=WORLD)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    world = World(WORLD)
    export_video_labels(world, out / "videos")
    export_video_labels(world, out / "videos", table="labels.parquet")
    export_coco(world, out / "coco", even_sample(WORLD.num_frames, 40))
    return out


def _videos(exported: Path, labels: Path | None = None, **extra: object) -> VideoLabelsData:
    return VideoLabelsData(kind="video_labels", videos=exported / "videos", labels=labels or exported / "videos" / "labels.csv",
                           **extra)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    keys = list(rows[0])
    pacsv.write_csv(pa.table({k: [r.get(k) for r in rows] for k in keys}), path)
    return path


def test_registry_has_every_kind() -> None:
    assert list_sources() == ["coco", "image_folder", "synthetic", "video_labels"]


@pytest.mark.parametrize("table", ["labels.csv", "labels.parquet"])
def test_video_labels_read_back_the_worlds_exact_counts(exported: Path, table: str) -> None:
    world = load_dataset(SyntheticData(), REQUEST)
    data = load_dataset(_videos(exported, exported / "videos" / table), REQUEST)
    order = [data.classes.index(c) for c in world.classes]
    assert sorted(data.classes) == sorted(world.classes)
    assert np.array_equal(data.samples.indices, world.samples.indices)
    assert np.array_equal(data.samples.counts[:, order], world.samples.counts)
    assert [t.camera_id for t in data.timelines] == ["cam-0", "cam-1"]
    assert data.label_counts() == world.label_counts() and data.fps == WORLD.fps
    assert [Path(f.path).name for f in data.files] == [table, "camera00.mp4", "camera01.mp4"]
    assert all(len(f.sha256) == 64 for f in data.files)
    # decoded mp4 frames are the rendered ones up to compression
    assert np.abs(data.samples.frames.astype(int) - world.samples.frames).mean() < 20


def test_coco_reads_back_the_same_frames_and_counts(exported: Path) -> None:
    world = load_dataset(SyntheticData(), REQUEST)
    data = load_dataset(CocoData(kind="coco", annotations=exported / "coco" / "annotations.json", fps=10), REQUEST)
    assert data.classes == world.classes
    assert np.array_equal(data.samples.indices, world.samples.indices)
    assert np.array_equal(data.samples.counts, world.samples.counts)
    assert np.array_equal(data.samples.frames, world.samples.frames)  # PNG is lossless


def test_every_source_gives_the_worlds_exact_boxes(exported: Path) -> None:
    """Boxes normalised to the frame: the world's exact ones, and the same read back from CSV and COCO."""
    world = World(WORLD)
    synthetic = load_dataset(SyntheticData(), REQUEST)
    first = world.camera(0).labels(int(synthetic.samples.indices[0])).boxes
    assert synthetic.samples.boxes is not None and len(synthetic.samples.boxes) == len(synthetic.samples)
    expected = np.array([[b.cls, b.x0 / 32, b.y0 / 32, b.x1 / 32, b.y1 / 32] for b in first]).reshape(-1, 5)
    np.testing.assert_allclose(synthetic.samples.boxes[0], expected, atol=1e-6)
    per_frame = [len(b) for b in synthetic.samples.boxes]
    assert per_frame == synthetic.samples.counts.sum(axis=1).tolist()
    coco = load_dataset(CocoData(kind="coco", annotations=exported / "coco" / "annotations.json", fps=10), REQUEST)
    videos = load_dataset(_videos(exported), REQUEST)
    order = np.array([videos.classes.index(c) for c in WORLD_CLASSES])
    for got, want in zip(coco.samples.boxes, synthetic.samples.boxes):  # type: ignore[arg-type]
        np.testing.assert_allclose(_sorted(got), _sorted(want), atol=1e-6)
    for got, want in zip(videos.samples.boxes, synthetic.samples.boxes):  # type: ignore[arg-type]
        np.testing.assert_allclose(_sorted(got), _sorted(np.column_stack([order[want[:, 0].astype(int)], want[:, 1:]])),
                                   atol=1e-6)


def _sorted(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.lexsort(boxes.T[::-1])]


def test_labels_without_boxes_give_no_boxes(tmp_path: Path, exported: Path) -> None:
    rows = [{"video": "camera00.mp4", "frame": 5, "class": "car"}]
    data = load_dataset(_bad_rows(tmp_path, exported, rows), REQUEST)
    assert data.samples.boxes is None and data.samples.counts.sum() == 1


def test_labelled_frames_rules(tmp_path: Path, exported: Path) -> None:
    """until_last: frames 0..last listed are labelled (unlisted = negatives); listed: only listed frames;
    a `labelled` range overrides both for its video."""
    video = exported / "videos" / "camera00.mp4"
    rows = [{"video": "camera00.mp4", "frame": 5, "class": "car"}, {"video": "camera00.mp4", "frame": 9, "class": "car"},
            {"video": "camera00.mp4", "frame": 9, "class": "car"}, {"video": "camera00.mp4", "frame": 20, "class": None}]
    table = _write_csv(tmp_path / "t.csv", rows)
    config = {"kind": "video_labels", "videos": [video], "labels": table}
    until_last = load_dataset(VideoLabelsData(**config), REQUEST).timelines[0]
    assert list(until_last.frames) == list(range(21)) and until_last.counts[:, 0].tolist()[5:10] == [1, 0, 0, 0, 2]
    listed = load_dataset(VideoLabelsData(**config, labelled_frames="listed"), REQUEST).timelines[0]
    assert list(listed.frames) == [5, 9, 20] and listed.counts[:, 0].tolist() == [1, 2, 0]
    ranged = load_dataset(VideoLabelsData(**config, labelled={"camera00.mp4": (0, 99)}), REQUEST).timelines[0]
    assert len(ranged.frames) == 100 and ranged.counts.sum() == 3


def test_ts_column_and_default_camera_id(tmp_path: Path, exported: Path) -> None:
    table = _write_csv(tmp_path / "t.csv", [{"video": "camera01.mp4", "ts": 1.0, "class": "bus"}])
    data = load_dataset(VideoLabelsData(kind="video_labels", videos=[exported / "videos" / "camera01.mp4"], labels=table),
                        REQUEST)
    assert data.timelines[0].camera_id == "camera01" and data.timelines[0].frames[-1] == 10  # 1.0 s at 10 fps


def test_split_keeps_whole_chunks_per_video() -> None:
    data = load_dataset(SyntheticData(), LoadRequest(300, 32, WORLD))
    train, val = split_by_chunks(data.samples, WORLD.fps, 0.5, chunk_s=5.0, seed=0)
    assert len(train) and len(val) and len(train) + len(val) == len(data.samples)
    chunk = lambda d: set(zip(d.cameras.tolist(), (d.indices // 50).tolist()))  # noqa: E731
    assert not chunk(train) & chunk(val)


# -- bad input: each error names the file and the row or field -------------------------------------

def _bad_rows(tmp_path: Path, exported: Path, rows: list[dict[str, object]]) -> VideoLabelsData:
    return VideoLabelsData(kind="video_labels", videos=[exported / "videos" / "camera00.mp4"],
                           labels=_write_csv(tmp_path / "bad.csv", rows))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"video": "camera00.mp4", "frame": 0, "class": "car"}, {"video": "camera00.mp4", "frame": 300, "class": "car"}],
         r"bad.csv: row 2: frame 300 is past the end of camera00.mp4 \(300 frames\)"),
        ([{"video": "camera00.mp4", "frame": 3, "class": "car", "x0": 0, "y0": 0, "x1": 40, "y1": 8}],
         r"bad.csv: row 1: box \(0, 0, 40, 8\) lies outside the 32x32 frame of camera00.mp4"),
        ([{"video": "camera00.mp4", "frame": 3, "class": "car", "x0": 0, "y0": 0, "x1": 9, "y1": 8},
          {"video": "camera00.mp4", "frame": 4, "class": "car", "x0": 9, "y0": 0, "x1": 9, "y1": 8}],
         r"bad.csv: row 2: box \(9, 0, 9, 8\) lies outside the 32x32 frame of camera00.mp4 \(or is empty\)"),
        ([{"video": "other.mp4", "frame": 3, "class": "car"}], r"bad.csv: row 1: video 'other.mp4' is not among data.videos"),
        ([{"video": "camera00.mp4", "frame": 3, "label": "car"}], r"bad.csv: missing columns \['class'\]"),
        ([{"video": "camera00.mp4", "frame": 2.5, "class": "car"}], r"bad.csv: row 1: frame 2.5 is not a whole number"),
    ],
)
def test_bad_label_rows(tmp_path: Path, exported: Path, rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(_bad_rows(tmp_path, exported, rows), REQUEST)


def test_missing_and_corrupt_videos(tmp_path: Path, exported: Path) -> None:
    table = exported / "videos" / "labels.csv"
    with pytest.raises(DataError, match=r"data.videos\[1\]: video file not found: .*nope.mp4"):
        load_dataset(VideoLabelsData(kind="video_labels", videos=[exported / "videos" / "camera00.mp4", tmp_path / "nope.mp4"],
                                     labels=table), REQUEST)
    corrupt = tmp_path / "camera00.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"camera00.mp4: cannot open or decode the video"):
        load_dataset(VideoLabelsData(kind="video_labels", videos=[corrupt], labels=table), REQUEST)


def test_labelled_range_and_class_list_errors(tmp_path: Path, exported: Path) -> None:
    with pytest.raises(DataError, match=r"data.labelled.camera00.mp4: \[0, 400\] is outside the video's 300 frames"):
        load_dataset(_videos(exported, labelled={"camera00.mp4": (0, 400)}), REQUEST)
    with pytest.raises(DataError, match=r"labels.csv: row \d+: class '(bicycle|bus|dog)' is not in data.classes "
                                         r"\['person', 'car'\]"):
        load_dataset(_videos(exported, classes=["person", "car"]), REQUEST)
    with pytest.raises(DataError, match=r"labels.csv: data.classes is empty"):
        load_dataset(_videos(exported, classes=[]), REQUEST)


def test_coco_dangling_ids_and_bad_boxes(tmp_path: Path, exported: Path) -> None:
    raw = json.loads((exported / "coco" / "annotations.json").read_text())
    cases = [
        ({"image_id": 9999}, r"annotations\[0\] \(id 1\): image_id 9999 is not among the images"),
        ({"category_id": 42}, r"annotations\[0\] \(id 1\): category_id 42 is not among the categories"),
        ({"bbox": [30, 0, 10, 10]}, r"annotations\[0\] \(id 1\): bbox \[30, 0, 10, 10\] lies outside the 32x32 image"),
        ({"bbox": [3, 0, 0, 10]}, r"annotations\[0\] \(id 1\): bbox \[3, 0, 0, 10\] lies outside .* \(or is empty\)"),
    ]
    for change, message in cases:
        bad = {**raw, "annotations": [{**raw["annotations"][0], **change}, *raw["annotations"][1:]]}
        path = exported / "coco" / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=message):
            load_dataset(CocoData(kind="coco", annotations=path), REQUEST)
    missing = {**raw, "images": [{**raw["images"][0], "file_name": "images/gone.png"}, *raw["images"][1:]]}
    (exported / "coco" / "bad.json").write_text(json.dumps(missing))
    with pytest.raises(DataError, match=r"bad.json: image id 1: cannot read .*gone.png"):
        load_dataset(CocoData(kind="coco", annotations=exported / "coco" / "bad.json"), REQUEST)


def test_image_folder_is_one_hot_per_sub_folder(tmp_path: Path) -> None:
    import cv2

    for k, cls in enumerate(["cat", "cow", "owl"]):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "a.png"), np.full((20, 24, 3), 80 * k, np.uint8))
    data = load_dataset(ImageFolderData(kind="image_folder", root=tmp_path), REQUEST)
    assert data.classes == ("cat", "cow", "owl") and data.samples.frames.shape == (3, 32, 32, 3)
    assert data.samples.counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_model_input_batches_apply_the_configs_size_and_normalization(exported: Path) -> None:
    from stemcell.config import TrainConfig
    from stemcell.data import model_input_batches

    config = TrainConfig.model_validate({
        "data": {"kind": "video_labels", "videos": str(exported / "videos"), "labels": str(exported / "videos/labels.csv")},
        "base": {"input_size": 16, "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
        "apps": [{"name": "car", "class": "car"}], "trainer": {"train_frames_per_camera": 30}})
    batches = list(model_input_batches(config, batch_size=25))
    assert [tuple(x.shape) for x, _ in batches] == [(25, 3, 16, 16), (25, 3, 16, 16), (10, 3, 16, 16)]
    assert all(c.shape == (len(x), 5) for x, c in batches)
    x = torch.cat([b[0] for b in batches])
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # (p - 0.5) / 0.5 for p in [0, 1]


def test_registry_refuses_duplicates_and_unknown_kinds() -> None:
    from stemcell.data import register_source

    with pytest.raises(ValueError, match="data kind 'coco' is already registered"):
        register_source("coco")(lambda section, request: None)
    with pytest.raises(ValueError, match=r"unknown data kind 'kinetics'; choose one of \['coco', 'image_folder'"):
        load_dataset(SyntheticData().model_copy(update={"kind": "kinetics"}), REQUEST)


def test_coco_unknown_class_names_the_annotation(exported: Path) -> None:
    with pytest.raises(DataError, match=r"annotations.json: annotations\[\d+\] \(id \d+\): class '\w+' is not in "
                                        r"data.classes \['person'\]"):
        load_dataset(CocoData(kind="coco", annotations=exported / "coco" / "annotations.json", classes=["person"]),
                     REQUEST)

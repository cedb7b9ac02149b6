"""Your own cameras' data: label real footage with a teacher, train on it; and the export round trip.

(a) OpenCV's sample `vtest.avi` (a fixed camera over a walkway, 768x576, 10 fps; Debian's opencv-doc)
    is labelled by the HOG people teacher (`stemcell label`'s code path), then a `person` count app
    (event: count >= 3; presence is true on ~99% of its frames, so counting is the question) is
    trained through `data: {kind: video_labels, labelled_frames: listed}` at >= 3 branchpoints. Each
    candidate is scored against the teacher's labels on held-out time chunks (the manifest's
    validation metrics): event-condition F1, precision, recall and count MAE. Stage times `label_s`,
    `train_s`.
(b) Export round trip: the synthetic world trained directly (`data: synthetic`) vs the same cameras
    exported as mp4 and labelled by the oracle teacher (every 2nd frame) into a video_labels table, trained through
    `video_labels`. `f1_world`, `f1_exported`: held-out F1 averaged over each app's candidates, then
    over apps (the same pretrained base for both, so only the data path differs).

    python benchmarks/own_data.py --quick --out /tmp/own_data.json   # < 60 s on 2 cores
    python benchmarks/own_data.py --out results/own_data.json         # every 2nd frame, longer training
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stemcell.config import TrainConfig
from stemcell.data import request_for
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.learning.autolabel import LabelRun, label_videos
from stemcell.learning.teachers import HogPeopleTeacherConfig, OracleTeacher, build_teacher
from stemcell.package.manifest import Manifest
from stemcell.training.mtrainer import BASE_CACHE, train_package
from stemcell.world import World
from stemcell.world.export import export_camera

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _settings(quick: bool) -> dict[str, Any]:
    return {
        "every": 10 if quick else 2,  # HOG costs ~0.15 s per 768x576 frame here
        "epochs": 2 if quick else 6,
        "pretrain": {"epochs": 2, "frames_per_camera": 300, "batch_size": 64} if quick
        else {"epochs": 3, "frames_per_camera": 1200, "batch_size": 64},
        "world_s": 150.0 if quick else 600.0,
        "frames_per_camera": 150 if quick else 800,  # training frames per camera (video)
        "branchpoints": [0, 3, 6] if quick else [0, 2, 3, 4, 5, 6],
    }


def _config(data: dict[str, Any], apps: list[dict[str, Any]], s: dict[str, Any], *, size: int,
            world_s: float = 60.0, val_chunk_s: float = 20.0) -> TrainConfig:
    return TrainConfig.model_validate({
        "world": {"seed": 0, "num_cameras": 2, "height": 32, "width": 32, "fps": 10, "duration_s": world_s},
        "data": data,
        "base": {"name": "tiny_cnn", "input_size": size, "pretrain": s["pretrain"]},
        "apps": apps,
        "trainer": {"branchpoints": s["branchpoints"], "epochs": s["epochs"], "batch_size": 32, "lr": 0.002,
                    "train_frames_per_camera": s["frames_per_camera"], "val_fraction": 0.3, "val_chunk_s": val_chunk_s},
        "latency": {"batch_sizes": [1, 8], "repeats": 2},
    })


def own_footage(work: Path, s: dict[str, Any]) -> dict[str, Any]:
    """(a): label vtest.avi with HOG, train the count app, score every candidate."""
    labels = work / "vtest_labels.parquet"
    teacher = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people"))
    started = time.perf_counter()
    summary = label_videos(teacher, str(VTEST), LabelRun(out=labels, every=s["every"], teacher="hog"))
    label_s = time.perf_counter() - started
    config = _config({"kind": "video_labels", "videos": [str(VTEST)], "labels": str(labels), "labelled_frames": "listed"},
                     [{"name": "crowd", "class": "person", "task": "count", "min_count": 3}], s, size=64,
                     val_chunk_s=10.0)  # vtest.avi is 80 s: 8 chunks, 30% held out
    started = time.perf_counter()
    manifest = train_package(config, work / "pkg-vtest")
    train_s = time.perf_counter() - started
    rows = [{"branchpoint": c.branchpoint, "f1": c.f1, "precision": c.precision, "recall": c.recall,
             "count_mae": c.count_mae} for c in manifest.candidates]
    return {"rows": rows, "label_s": label_s, "train_s": train_s, "frames_labelled": summary["frames_labelled"],
            "people_labelled": summary["objects"].get("person", 0),
            "event_base_rate": next(a.positive_fraction for a in manifest.apps)}


def _mean_f1(manifest: Manifest) -> float:
    """Mean over apps of the mean held-out F1 of the app's candidates."""
    apps = sorted({c.app for c in manifest.candidates})
    return float(np.mean([np.mean([c.f1 for c in manifest.candidates if c.app == a]) for a in apps]))


def round_trip(work: Path, s: dict[str, Any]) -> dict[str, Any]:
    """(b): world directly vs exported mp4 + oracle-labelled table, same base."""
    apps = [{"name": "car", "class": "car"}, {"name": "person", "class": "person"}]
    direct = _config({"kind": "synthetic"}, apps, s, size=32, world_s=s["world_s"])
    world = World(request_for(direct).world)
    videos = work / "exported"
    for k in range(world.config.num_cameras):
        export_camera(world.camera(k), videos, name=f"cam{k}")
        (videos / f"cam{k}.parquet").unlink()  # the export's own labels: the oracle teacher writes ours
    labels = work / "exported_labels.parquet"
    label_videos(OracleTeacher(world), str(videos), LabelRun(out=labels, every=2, teacher="oracle"),
                 world_cameras={f"cam{k}": k for k in range(world.config.num_cameras)})
    exported = direct.model_copy(update={"data": _config(
        {"kind": "video_labels", "videos": str(videos), "labels": str(labels), "labelled_frames": "listed"},
        apps, s, size=32).data})
    f1_world = _mean_f1(train_package(direct, work / "pkg-world"))
    (work / "pkg-exported").mkdir()
    shutil.copy(work / "pkg-world" / BASE_CACHE, work / "pkg-exported" / BASE_CACHE)
    f1_exported = _mean_f1(train_package(exported, work / "pkg-exported"))
    return {"f1_world": f1_world, "f1_exported": f1_exported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every 8th frame labelled, short training (< 60 s)")
    parser.add_argument("--out", type=Path, required=True, help="JSON output (Parquet + PNG written beside it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not VTEST.is_file():
        raise SystemExit(f"{VTEST} is missing: apt-get install opencv-doc (Debian's OpenCV samples)")
    s = _settings(args.quick)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="own-data-") as tmp:
        own = own_footage(Path(tmp), s)
        trip = round_trip(Path(tmp), s)
    result = {"quick": args.quick, "source": str(VTEST), "every": s["every"], **own, **trip,
              "total_s": time.perf_counter() - started}
    print_table(own["rows"], title=f"person count app (events at count >= 3) on vtest.avi, HOG teacher's labels, "
                                    f"every {s['every']}th frame; held-out chunks")
    print_table([{k: result[k] for k in ("frames_labelled", "label_s", "train_s", "f1_world", "f1_exported", "total_s")}],
                title="stages and export round trip")
    save_results(result, args.out, rows=own["rows"])
    fig, ax = plt.subplots(figsize=(6, 4))
    bps = [r["branchpoint"] for r in own["rows"]]
    for key in ("f1", "precision", "recall"):
        ax.plot(bps, [r[key] for r in own["rows"]], marker="o", label=key)
    ax.set(xlabel="branchpoint", ylabel="held-out score vs HOG labels", title="vtest.avi: count >= 3 people")
    ax.legend()
    save_plot(fig, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()

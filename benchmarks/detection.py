"""Detect apps: held-out mAP per branchpoint on the synthetic world and on real footage, and the
stem-sharing payoff for five detect apps.

(a) `world`: the synthetic world's exact boxes (`data: synthetic`); a detect app for people and
    cars is trained by M-Trainer at several branchpoints; mAP@0.5 and mAP@[.5:.95] (pycocotools) on
    held-out time chunks, as the manifest records them.
(b) `vtest`: OpenCV's sample `vtest.avi` (768x576 walkway, Debian's opencv-doc) labelled by the HOG
    people teacher (`stemcell label`'s code path, every N-th frame), then a `person` detect app
    trained through `data: {kind: video_labels, labelled_frames: listed}`; its mAP is against the
    teacher's boxes on held-out chunks (how well the student reproduces the teacher).
`fps` per row: frames/s of that candidate alone (forward + decoding + NMS) at batch 8 on this device.
(c) `learning`: the world's detect app on a drifted camera (camera 0 past the package's training
    time: other scenes, lighting, weather), mAP@0.5 before
    and after live retraining from the world's boxes (`benchmarks/detection_learning.py`):
    `map50_before_learning`, `map50_after_learning`.
`fps_5_detect_apps_shared`: five detect apps at the deepest branchpoint in one stem tree (the stem
runs once, each app adds its head); `fps_5_detect_apps_separate`: the same five apps as separate
full models. App weights for the throughput part are the trained candidate's with seeded noise (what
matters for speed is that each app's own layers are distinct tensors); accuracy comes only from (a)
and (b).

    python benchmarks/detection.py --quick --out /tmp/detection.json   # a few minutes on 2 busy cores
    python benchmarks/detection.py --out results/detection.json        # more frames, longer training
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from stemcell.config import TrainConfig
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.learning.autolabel import LabelRun, label_videos
from stemcell.learning.teachers import HogPeopleTeacherConfig, build_teacher
from stemcell.models import AppModel
from stemcell.models.detection import decode
from stemcell.package import MPackage, load_package
from stemcell.sharing import StemTree
from stemcell.training.loop import training_device
from stemcell.training.mtrainer import train_package

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.detection_learning import learning_section  # noqa: E402
from benchmarks.sharing_throughput import _seconds  # noqa: E402  (one way to time a call on any device)

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
BATCH = 8
LEARNING_BRANCHPOINT = 3  # the detect app that learns on the drifted camera: trainable layers above a shared stem


def _settings(quick: bool) -> dict[str, Any]:
    return {
        "every": 5 if quick else 2,  # HOG costs ~0.15 s per 768x576 frame on one core
        "epochs": 25 if quick else 60,
        "pretrain": {"epochs": 2, "frames_per_camera": 300, "batch_size": 64} if quick
        else {"epochs": 4, "frames_per_camera": 1200, "batch_size": 64},
        "world_s": 120.0 if quick else 600.0,
        "frames_per_camera": 300 if quick else 1500,
        "branchpoints": [0, 3, 6] if quick else [0, 2, 3, 4, 5, 6],
        "rounds": 5 if quick else 30,
    }


def _config(data: dict[str, Any], apps: list[dict[str, Any]], s: dict[str, Any], *, size: int,
            val_chunk_s: float = 20.0) -> TrainConfig:
    return TrainConfig.model_validate({
        "world": {"seed": 0, "num_cameras": 2, "height": 96, "width": 96, "fps": 10, "duration_s": s["world_s"]},
        "data": data,
        "base": {"name": "tiny_cnn", "input_size": size, "pretrain": s["pretrain"]},
        "apps": apps,
        "trainer": {"branchpoints": s["branchpoints"], "epochs": s["epochs"], "batch_size": 32, "lr": 0.003,
                    "train_frames_per_camera": s["frames_per_camera"], "val_fraction": 0.3, "val_chunk_s": val_chunk_s},
        "latency": {"batch_sizes": [1, BATCH], "repeats": 2},
    })


def _best_fps(fn: Callable[[], object], device: torch.device, rounds: int) -> float:
    """Frames/s of the fastest of `rounds` calls on BATCH frames (other processes only slow a call down)."""
    fn()  # warm-up
    return BATCH / min(_seconds(fn, device) for _ in range(rounds))


def _detect(model: AppModel, x: torch.Tensor, classes: int) -> object:
    with torch.inference_mode():
        return decode(model(x), classes, [(576, 768)] * len(x))


def _rows(source: str, package: MPackage, app: str, device: torch.device, rounds: int) -> list[dict[str, Any]]:
    size = package.manifest.base.input_size
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    classes = len(next(a.classes for a in package.manifest.apps if a.name == app))
    rows = []
    for c in package.manifest.candidates_for(app):
        model = package.app_model(app, c.branchpoint).to(device)
        rows.append({"source": source, "branchpoint": c.branchpoint, "map50": c.map50, "map50_95": c.map50_95,
                     "count_f1": c.f1, "count_mae": c.count_mae,
                     "fps": _best_fps(lambda m=model: _detect(m, x, classes), device, rounds)})
    return rows


def _perturbed(package: MPackage, app: str, branchpoint: int, seed: int) -> AppModel:
    """The trained candidate with seeded noise on its own layers: a distinct app of the same shape."""
    model = package.app_model(app, branchpoint)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01 * (p.abs().mean() + 1e-3))
    return model.eval()


def sharing(package: MPackage, app: str, device: torch.device, rounds: int, apps: int = 5) -> dict[str, float]:
    """Frames/s of `apps` detect apps: one stem tree at the deepest branchpoint vs separate full models."""
    s = package.base.num_segments
    size = package.manifest.base.input_size
    classes = len(next(a.classes for a in package.manifest.apps if a.name == app))
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    tree = StemTree(s, device)
    for i in range(apps):
        tree.add(("cam", f"{app}{i}"), _perturbed(package, app, s, seed=i + 1))
    rows = {key: torch.arange(BATCH) for key in tree.keys()}
    separate = [_perturbed(package, app, 0, seed=100 + i).to(device) for i in range(apps)]
    sizes = [(576, 768)] * BATCH

    def shared() -> object:
        return [decode(out, classes, sizes) for out in tree.forward(x, rows).values()]

    def apart() -> object:
        return [_detect(m, x, classes) for m in separate]

    return {"fps_5_detect_apps_shared": _best_fps(shared, device, rounds),
            "fps_5_detect_apps_separate": _best_fps(apart, device, rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames and epochs, vtest every 5th frame")
    parser.add_argument("--out", type=Path, required=True, help="JSON output (Parquet and PNG are written beside it)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steady on a busy box)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    s = _settings(args.quick)
    device = training_device()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stemcell-detection-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        world_apps = [{"name": "street", "classes": ["person", "car"], "task": "detect"}]
        train_package(_config({"kind": "synthetic"}, world_apps, s, size=64), work / "world")
        timings["world_train_s"] = time.perf_counter() - started
        world = load_package(work / "world")
        learning = learning_section(world, "street", LEARNING_BRANCHPOINT, args.quick)

        started = time.perf_counter()
        labels = work / "vtest_labels.parquet"
        teacher = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people"))
        summary = label_videos(teacher, str(VTEST), LabelRun(out=labels, every=s["every"], teacher="hog"))
        timings["vtest_label_s"] = time.perf_counter() - started
        started = time.perf_counter()
        data = {"kind": "video_labels", "videos": [str(VTEST)], "labels": str(labels), "labelled_frames": "listed"}
        train_package(_config(data, [{"name": "people", "class": "person", "task": "detect"}], s, size=96,
                              val_chunk_s=10.0), work / "vtest")  # vtest.avi is 80 s: 8 chunks, 30% held out
        timings["vtest_train_s"] = time.perf_counter() - started
        vtest = load_package(work / "vtest")

        rows = _rows("world", world, "street", device, s["rounds"]) + _rows("vtest", vtest, "people", device, s["rounds"])
        payoff = sharing(world, "street", device, s["rounds"])
    world_maps = [r["map50"] for r in rows if r["source"] == "world" and r["map50"] is not None]
    result = {
        "quick": args.quick, "device": str(device), "threads": args.threads, "batch": BATCH,
        "rows": rows,
        "map50_world_best": max(world_maps) if world_maps else None,
        **payoff,
        "map50_before_learning": learning["map50_before_learning"],
        "map50_after_learning": learning["map50_after_learning"],
        "learning": learning,
        "sharing_speedup": payoff["fps_5_detect_apps_shared"] / payoff["fps_5_detect_apps_separate"],
        "vtest_frames_labelled": summary["frames_labelled"],
        "vtest_people_labelled": summary["objects"].get("person", 0),
        **timings,
    }
    print_table(rows, title=f"detect apps on tiny_cnn ({device}): held-out mAP per branchpoint, fps at batch {BATCH}")
    print(f"map50_world_best = {result['map50_world_best']}; 5 detect apps: shared stem "
          f"{payoff['fps_5_detect_apps_shared']:.0f} fps vs separate {payoff['fps_5_detect_apps_separate']:.0f} fps "
          f"({result['sharing_speedup']:.2f}x); drifted camera mAP@0.5 {learning['map50_before_learning']} before "
          f"-> {learning['map50_after_learning']} after live retraining")
    out = save_results(result, args.out, rows=rows)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for source, marker in (("world", "o"), ("vtest", "s")):
        mine = [r for r in rows if r["source"] == source and r["map50"] is not None]
        ax.plot([r["branchpoint"] for r in mine], [r["map50"] for r in mine], marker=marker, label=f"{source} mAP@0.5")
        ax.plot([r["branchpoint"] for r in mine], [r["map50_95"] for r in mine], marker=marker, linestyle="--",
                label=f"{source} mAP@[.5:.95]")
    ax.set(xlabel="branchpoint (frozen shared segments)", ylabel="held-out mAP", ylim=(0, 1),
           title="detect apps: mAP vs branchpoint (world: exact boxes; vtest: HOG teacher's boxes)")
    ax.legend(fontsize=8)
    save_plot(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

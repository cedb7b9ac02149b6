"""The `learning` section of `benchmarks/detection.py`: a detect app on a drifted synthetic camera,
mAP@0.5 before and after live retraining from the teacher's boxes.

The camera drifted: it is camera 0 of the package's world, measured on a stretch past the package's
training time (--quick: 240-280 s; the package saw 0-120 s), where its scene segments, lighting and
weather have moved on (the package's mAP there is 0.0 at --quick). It streams from 0 s, so at
--quick half of its samples are times the package's training drew from too. The teacher is the world's exact boxes (the oracle: the learning loop is measured
without teacher errors). Samples arrive as the live path takes them: one frame per second of video,
shrunk to the model's input (`stemcell.imaging.resize_frames`), labelled, into the camera's buffer;
the camera's `DetectJob` (AMS: K gradient-guided Adam steps, gamma of the coordinates, above the
branchpoint) retrains every T_update. mAP@0.5 (pycocotools) is measured on the camera's later frames,
which no phase trained on: `map50_before_learning` with the package's candidate as trained,
`map50_after_learning` with the model the retraining published (each version passed the safety check).

    python benchmarks/detection_learning.py --quick --out /tmp/detection_learning.json  # trains its own package
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemcell.eval import print_table, save_results
from stemcell.imaging import resize_frames
from stemcell.learning.ams import AmsConfig, AmsTrainer
from stemcell.learning.buffer import BufferItem
from stemcell.learning.detect_labels import teacher_labels
from stemcell.learning.detect_learning import DetectJob, detect_spec, make_job
from stemcell.learning.teachers import FrameMeta, OracleTeacher
from stemcell.package import MPackage, load_package
from stemcell.world import World, WorldConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

DRIFT_CAMERA = 0  # of the package's world (seed 0, whose cameras 0 and 1 trained it)


def learning_settings(quick: bool) -> dict[str, Any]:
    return {"learn_s": 240.0 if quick else 600.0, "test_s": 40.0 if quick else 120.0, "test_every": 4,
            "iterations": 20, "gamma": 0.05, "lr": 1e-2, "holdout": 4}


def _labelled(world: World, camera: int, indices: np.ndarray, classes: tuple[str, ...], size: int):
    """Frames at model size and the oracle's labels (boxes normalised by the world's frame size)."""
    full = world.camera(camera).frames(indices)
    objects = OracleTeacher(world).label(full, FrameMeta(camera, indices))
    return resize_frames(full, size), teacher_labels(objects, classes, (world.config.height, world.config.width))


def learning_section(package: MPackage, app: str, branchpoint: int, quick: bool) -> dict[str, Any]:
    """mAP@0.5 of `app` at `branchpoint` on the drifted camera before and after live retraining."""
    s = learning_settings(quick)
    manifest = package.manifest
    size, classes = manifest.base.input_size, tuple(manifest.data.classes)
    entry = next(a for a in manifest.apps if a.name == app)
    world = World(WorldConfig(seed=0, num_cameras=DRIFT_CAMERA + 1, height=96, width=96, fps=10,
                              duration_s=s["learn_s"] + s["test_s"]))
    fps = world.config.fps
    test_idx = np.arange(int(s["learn_s"] * fps), world.config.num_frames, s["test_every"])
    frames, labels = _labelled(world, DRIFT_CAMERA, test_idx, classes, size)
    test = [BufferItem(float(i), f, y, None, b) for i, f, y, b in zip(test_idx, frames, labels.presence, labels.boxes)]
    config = AmsConfig(input_size=size, mean=manifest.base.normalization.mean, std=manifest.base.normalization.std,
                       iterations=s["iterations"], gamma=s["gamma"], lr=s["lr"], adaptive=False,
                       safety_holdout=s["holdout"])
    trainer = AmsTrainer(config, job_type=make_job)
    columns = [classes.index(c) for c in entry.classes]
    job = trainer.add_job("drifted", app, package.app_model(app, branchpoint), columns[0],
                          detect_spec(branchpoint, columns))
    assert isinstance(job, DetectJob)
    before = job.evaluate(test)
    started, phases, kept_back = time.perf_counter(), 0, 0
    for t in np.arange(0.0, s["learn_s"], 10.0):  # one upload per T_update (10 s) of video, 1 sample/s
        idx = (np.arange(t, t + 10.0) * fps).astype(np.int64)
        frames, labels = _labelled(world, DRIFT_CAMERA, idx, classes, size)
        trainer.add_samples("drifted", idx / fps, frames, labels.presence, labels.boxes)
        for published in trainer.run_pending():
            phases += 1
            kept_back += int(published.kept_back)
    after = job.evaluate(test)
    return {"app": app, "branchpoint": branchpoint, "drift_camera": DRIFT_CAMERA,
            "learning_samples": int(s["learn_s"]), "test_frames": len(test),
            "map50_before_learning": None if before is None else before[0],
            "map50_after_learning": None if after is None else after[0],
            "phases": phases, "kept_back": kept_back, "versions": job.version,
            "learning_s": time.perf_counter() - started, **{f"ams_{k}": v for k, v in s.items()}}


def main() -> None:
    from benchmarks.detection import _config, _settings  # the same package recipe as detection.py's world part
    from stemcell.training.mtrainer import train_package

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--branchpoint", type=int, default=3)
    parser.add_argument("--package", type=Path, help="a package from an earlier run (trained there when missing)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    s = {**_settings(args.quick), "branchpoints": [args.branchpoint]}
    with tempfile.TemporaryDirectory(prefix="stemcell-detect-learning-") as tmp:
        package = args.package or Path(tmp) / "world"
        if not (package / "manifest.json").exists():
            apps = [{"name": "street", "classes": ["person", "car"], "task": "detect"}]
            train_package(_config({"kind": "synthetic"}, apps, s, size=64), package)
        result = learning_section(load_package(package), "street", args.branchpoint, args.quick)
    print_table([result], title="detect app learning on a drifted synthetic camera (oracle boxes)")
    save_results(result, args.out)


if __name__ == "__main__":
    main()

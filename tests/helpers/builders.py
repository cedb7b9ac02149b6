"""Small real instances for tests (random frames, tiny models): build, don't copy-paste setups."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stemcell.models import SegmentedNet, build_base
from stemcell.package.build import TrainingInfo, app_entry, build_package, synthetic_data_entry
from stemcell.package.manifest import AppEntry, Manifest
from stemcell.training import CandidateSpec, LabelledFrames, finetune_candidate, profile_latency
from stemcell.training.finetune import CandidateResult


def random_frames(n: int = 48, size: int = 32, classes: int = 5, seed: int = 0) -> LabelledFrames:
    """Random frames whose 'car' label is a learnable function of brightness, so training means something."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    presence = rng.random((n, classes)) < 0.3
    presence[:, 1] = frames.mean(axis=(1, 2, 3)) > 127.5
    return LabelledFrames(frames, presence, np.zeros(n, int), np.arange(n))


def tiny_package(root: Path, branchpoints: tuple[int, ...] = (0, 3, 6), apps: tuple[str, ...] = ("car",),
                 count_apps: tuple[str, ...] = (), detect_apps: tuple[str, ...] = ()) -> Manifest:
    """A real (tiny) M-Package: tiny_cnn base, one epoch per candidate, on random frames.

    `count_apps` count objects of class 'car' (task: count, event at count >= 2); the random frames'
    counts are a learnable function of brightness too. `detect_apps` box 'car's: bright squares
    (`detect_candidates`).
    """
    return tiny_package_parts(root, branchpoints, apps, count_apps, detect_apps)[0]


def tiny_package_parts(root: Path, branchpoints: tuple[int, ...] = (0, 3, 6), apps: tuple[str, ...] = ("car",),
                       count_apps: tuple[str, ...] = (), detect_apps: tuple[str, ...] = ()
                       ) -> tuple[Manifest, SegmentedNet, list[CandidateResult]]:
    """`tiny_package`, plus the base and the trained candidates as they were before saving (what a
    round trip must give back)."""
    base = build_base("tiny_cnn")
    train, val = random_frames(seed=1), random_frames(seed=2)
    specs = [CandidateSpec(app, (1,), b, epochs=1, lr=1e-3, batch_size=16, input_size=32) for app in apps for b in branchpoints]
    specs += [CandidateSpec(app, (1,), b, epochs=1, lr=1e-3, batch_size=16, input_size=32, task="count", min_count=2)
              for app in count_apps for b in branchpoints]
    results = [finetune_candidate(base, spec, with_counts(train), with_counts(val)) for spec in specs]
    profile = profile_latency(base, 32, batch_sizes=(1, 4), repeats=2)
    entries = [app_entry(app, ["car"], val.presence[:, 1]) for app in apps]
    entries += [app_entry(app, ["car"], with_counts(val).counts[:, 1] >= 2, task="count", min_count=2) for app in count_apps]
    detect_results, detect_entries = detect_candidates(base, detect_apps, branchpoints)
    results, entries = results + detect_results, entries + detect_entries
    info = TrainingInfo(input_size=32, fps=10.0, data=synthetic_data_entry(), world={"seed": 0})
    return build_package(root, base, info, profile, entries, results), base, results


def with_counts(data: LabelledFrames) -> LabelledFrames:
    """Object counts for random frames: 0-3 'car's rising with brightness (0 where 'car' is absent)."""
    counts = data.presence.astype(np.int32)
    counts[:, 1] = np.where(data.presence[:, 1], 1 + (data.frames.mean(axis=(1, 2, 3)) > 170) * 2, 0)
    return LabelledFrames(data.frames, data.presence, data.cameras, data.indices, counts)


def decisive_package(root: Path) -> None:
    """A tiny package whose 'car' app is sure of itself (trained longer than `tiny_package`): bright
    frames score near 1, dark ones near 0, so a test or benchmark can turn an event on and off at will."""
    base = build_base("tiny_cnn")
    train, val = random_frames(n=128, seed=1), random_frames(seed=2)
    result = finetune_candidate(base, CandidateSpec("car", (1,), 0, epochs=30, lr=1e-2, batch_size=32, input_size=32),
                                train, val)
    info = TrainingInfo(input_size=32, fps=10.0, data=synthetic_data_entry(), world={"seed": 0})
    build_package(root, base, info, profile_latency(base, 32, batch_sizes=(1,), repeats=1),
                  [app_entry("car", ["car"], val.presence[:, 1])], [result])


def square_frames(n: int = 48, size: int = 32, seed: int = 0) -> LabelledFrames:
    """Dark random frames with 0-2 bright squares ('car', class column 1) whose boxes are known exactly."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    boxes, counts = [], np.zeros((n, 5), np.int32)
    for i in range(n):
        mine = []
        for _ in range(rng.integers(0, 3)):
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
            frames[i, y0 : y0 + side, x0 : x0 + side] = 230
            mine.append([1, x0 / size, y0 / size, (x0 + side) / size, (y0 + side) / size])
        boxes.append(np.array(mine, np.float32).reshape(-1, 5))
        counts[i, 1] = len(mine)
    return LabelledFrames(frames, counts > 0, np.zeros(n, int), np.arange(n), counts, tuple(boxes))


def detect_candidates(base: SegmentedNet, apps: tuple[str, ...], branchpoints: tuple[int, ...], epochs: int = 20
                      ) -> tuple[list[CandidateResult], list[AppEntry]]:
    """Detect apps boxing 'car's (bright squares, event at count >= 1): their candidates and entries."""
    train, val = square_frames(seed=1), square_frames(n=16, seed=2)
    specs = [CandidateSpec(app, (1,), b, epochs=epochs, lr=3e-3, batch_size=16, input_size=32, task="detect")
             for app in apps for b in branchpoints]
    return ([finetune_candidate(base, spec, train, val) for spec in specs],
            [app_entry(app, ["car"], val.counts[:, 1] >= 1, task="detect") for app in apps])


def detect_package(root: Path, branchpoints: tuple[int, ...] = (0, 6), epochs: int = 20) -> Manifest:
    """A tiny package with one detect app 'cars' (class 'car', event at count >= 1) trained on squares."""
    base = build_base("tiny_cnn")
    results, entries = detect_candidates(base, ("cars",), branchpoints, epochs)
    info = TrainingInfo(input_size=32, fps=10.0, data=synthetic_data_entry(), world={"seed": 0})
    return build_package(root, base, info, profile_latency(base, 32, batch_sizes=(1,), repeats=1), entries, results)


def bright_dark_samples(count: int, start: float, flip: bool, size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps 1 s apart, frames, labels) of a trivially learnable scene: bright frames show a car
    (label column 1), dark ones do not; `flip` labels them the other way round (another scene)."""
    bright = np.arange(count) % 2 == 0
    frames = np.where(bright[:, None, None, None], 220, 30).astype(np.uint8) * np.ones((1, size, size, 3), np.uint8)
    labels = np.zeros((count, 5), np.float32)
    labels[:, 1] = bright != flip
    return start + np.arange(count, dtype=np.float64), frames, labels

"""The demo's accuracy table with the frame path before issue 15 and now, side by side, at real resolutions.

Before issue 15 the executor got the whole decoded JPEG and resized it in float (`normalised`:
bilinear with antialiasing, in torch). Now the ingress decodes the JPEG at libjpeg's DCT scale
(1/2..1/8, both sides still >= the model input) and resizes it once in uint8 with OpenCV's area
average (`stemcell.imaging.decode_for_model`, the rule the training data gets). Four paths from
the same JPEG bytes, in one run:

- `old`: full decode, then `normalised(..., size)` (the pre-issue-15 executor);
- `full_area`: full decode, then `resize_frames` (separates the DCT scale from the resize rule);
- `new`: `decode_for_model` (what serving does now);
- `dct_2x`: a finer DCT scale (both sides >= twice the input), then the same resize.

The demo's cameras (`app.demo.demo_cameras`: the synthetic cameras the apps were fine-tuned on and
the unseen camera exported to an mp4 and read back) are scaled up to 128x128, 643x481 (`odd`: sides
that are no multiple of libjpeg's blocks), 1280x720 and 1920x1080 (and kept at their own size:
`native`) and encoded as JPEGs (quality 90, as a camera would); every frame of every camera goes
through the demo's Mainstream plan in one `StemRuntime` (no Ray, no HTTP: no frame is dropped, so
the paths see exactly the same frames) and is scored by the demo's own `score_stream`. Per camera
and app: frame F1 and event F1 per path and the `new - old` deltas; per resolution: the means, how
often each path gives the label the camera's own-size frames get (`agree_native_*`: what the apps
were trained on, so the closer the better), how often `new` agrees with `old`, and the largest score
difference. A real clip (OpenCV's vtest.avi, 768x576 people walking, when installed) adds the label
agreement of the paths on real detail, at its own size, 643x481 and 1080p.

    python benchmarks/resize_accuracy.py --quick --out out/perf/resize_accuracy.json
    python benchmarks/resize_accuracy.py --out out/perf/resize_accuracy.json  # the demo's package (configs/demo.yaml)
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.demo import demo_cameras, obtain_package, plan  # noqa: E402
from stemcell.eval import print_table, save_plot, save_results  # noqa: E402
from stemcell.eval.stream_score import StreamRecord, score_stream  # noqa: E402
from stemcell.imaging import decode_for_model, decode_image, encode_jpeg  # noqa: E402
from stemcell.models import normalised, to_input  # noqa: E402
from stemcell.package import MPackage  # noqa: E402
from stemcell.sharing.runtime import InferRequest, StemRuntime  # noqa: E402
from stemcell.world import CLASSES, open_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
# (height, width); None: the source's own
RESOLUTIONS: dict[str, tuple[int, int] | None] = {"native": None, "128": (128, 128), "odd": (481, 643),
                                                  "720": (720, 1280), "1080": (1080, 1920)}
CHUNK = 32  # frames per runtime call
Norm = dict[str, list[float]]


def _old(jpeg: bytes, size: int, norm: Norm) -> torch.Tensor:
    """The executor before issue 15: the whole frame, resized in float with antialiasing."""
    return normalised(torch.from_numpy(decode_image(jpeg, "image/jpeg")).permute(2, 0, 1)[None], size, **norm)


def _full_area(jpeg: bytes, size: int, norm: Norm) -> torch.Tensor:
    """The whole frame, then today's one resize (`to_input` resizes with `resize_frames`)."""
    return to_input(decode_image(jpeg, "image/jpeg"), size, **norm)


def _new(jpeg: bytes, size: int, norm: Norm) -> torch.Tensor:
    """Today's path: decoded at the DCT scale, resized once, where the frame enters."""
    return to_input(decode_for_model(jpeg, "image/jpeg", size), size, **norm)


def _dct_2x(jpeg: bytes, size: int, norm: Norm) -> torch.Tensor:
    """A finer DCT scale (both sides >= twice the input), then the same resize: what a safer rule would give."""
    return to_input(decode_image(jpeg, "image/jpeg", min_side=2 * size), size, **norm)


PATHS: dict[str, Callable[[bytes, int, Norm], torch.Tensor]] = {"old": _old, "full_area": _full_area, "new": _new,
                                                                 "dct_2x": _dct_2x}


@dataclass(frozen=True)
class Clip:
    """One camera's frames as JPEGs at one resolution, with their timestamps."""

    camera: str
    resolution: str
    jpegs: tuple[bytes, ...]
    stamps: tuple[float, ...]


def _frames(source: str, fps: float, count: int) -> Iterator[tuple[np.ndarray, float]]:
    with open_source(source, fps=fps) as src:
        for i, item in enumerate(src):
            if i >= count:
                return
            yield item


def camera_clips(camera: str, source: str, fps: float, count: int, resolutions: Sequence[str]) -> list[Clip]:
    """The camera's first `count` frames, scaled (bilinear, as a larger sensor would see the scene) to
    each resolution and JPEG-encoded."""
    by_res: dict[str, list[bytes]] = {r: [] for r in resolutions}
    stamps = []
    for frame, ts in _frames(source, fps, count):
        stamps.append(ts)
        for res in resolutions:
            shape = RESOLUTIONS[res]
            scaled = frame if shape is None else cv2.resize(frame, shape[::-1], interpolation=cv2.INTER_LINEAR)
            by_res[res].append(encode_jpeg(scaled))
    return [Clip(camera, r, tuple(j), tuple(stamps)) for r, j in by_res.items()]


def run_clip(runtime: StemRuntime, clip: Clip, path: str, apps: Sequence[dict], fps: float
             ) -> tuple[list[StreamRecord], list[float]]:
    """Every frame of `clip` through `path` and the runtime, as the camera's planned apps.
    Returns the records `score_stream` takes (latency = ms from JPEG bytes to model input) and those ms."""
    name = f"{clip.camera}|{clip.resolution}|{path}"
    runtime.set_camera(name, apps, stream_fps=fps)
    size, norm, convert = runtime.input_size, runtime.package.manifest.base.normalization.model_dump(), PATHS[path]
    records: list[StreamRecord] = []
    spent: list[float] = []
    try:
        for start in range(0, len(clip.jpegs), CHUNK):
            inputs = []
            for jpeg in clip.jpegs[start:start + CHUNK]:
                t0 = time.perf_counter()
                inputs.append(convert(jpeg, size, norm))
                spent.append((time.perf_counter() - t0) * 1000)
            stamps = clip.stamps[start:start + CHUNK]
            (results,) = runtime.infer([InferRequest(name, torch.cat(inputs), stamps)])
            if isinstance(results, Exception):
                raise results
            records += [StreamRecord(ts, ms, tuple(r.as_dict() for r in frame.results))
                        for ts, ms, frame in zip(stamps, spent[start:], results)]
    finally:
        runtime.remove_camera(name)
    return records, spent


def _labels(records: Sequence[StreamRecord]) -> dict[str, np.ndarray]:
    """app -> (label, score) per analysed frame, in order."""
    out: dict[str, list[tuple[bool, float]]] = {}
    for record in records:
        for r in record.results:
            if r["fresh"]:
                out.setdefault(str(r["app"]), []).append((bool(r["label"]), float(r["score"])))
    return {app: np.array(v, dtype=float) for app, v in out.items()}


def agreement(a: Sequence[StreamRecord], b: Sequence[StreamRecord]) -> tuple[float, float]:
    """(share of analysed (frame, app) answers with the same label, largest score difference)."""
    la, lb = _labels(a), _labels(b)
    same = np.concatenate([la[app][:, 0] == lb[app][:, 0] for app in la])
    diff = np.concatenate([np.abs(la[app][:, 1] - lb[app][:, 1]) for app in la])
    return float(same.mean()), float(diff.max())


def measure_demo(package: MPackage, runtime: StemRuntime, specs: list[dict], workdir: Path, cameras: int,
                 duration_s: float, resolutions: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(rows per camera, app and resolution with every path side by side; one summary row per resolution)."""
    fps = float(package.manifest.fps)
    count = int(duration_s * fps)
    columns = {a.name: CLASSES.index(a.classes[0]) for a in package.manifest.apps}
    rows: list[dict] = []
    records: dict[tuple[str, str, str], list[StreamRecord]] = {}
    spent: dict[tuple[str, str], list[float]] = {}
    for cam in demo_cameras(package, cameras, duration_s, workdir / "video"):
        for clip in camera_clips(cam.camera_id, cam.source, fps, count, resolutions):
            scored = {}
            for path in PATHS:
                recs, ms = run_clip(runtime, clip, path, specs, fps)
                records[(cam.camera_id, clip.resolution, path)] = recs
                spent.setdefault((clip.resolution, path), []).extend(ms)
                elapsed = len(clip.stamps) / fps
                scored[path] = score_stream(cam.camera_id, recs, cam.truth, columns, fps, elapsed)
            for by_path in zip(*scored.values()):
                row = {"resolution": clip.resolution, "camera": cam.camera_id, "app": by_path[0]["app"],
                       "analysed": by_path[0]["analysed"], "seen_in_training": cam.seen_in_training}
                for path, r in zip(PATHS, by_path):
                    row[f"frame_f1_{path}"], row[f"event_f1_{path}"] = r["frame_f1"], r["event_f1"]
                row["frame_f1_delta"] = round(row["frame_f1_new"] - row["frame_f1_old"], 3)
                row["event_f1_delta"] = round(row["event_f1_new"] - row["event_f1_old"], 3)
                rows.append(row)
    summary = []
    for res in resolutions:
        mine = [r for r in rows if r["resolution"] == res]
        row: dict = {"resolution": res}
        for path in PATHS:
            row[f"frame_f1_{path}"] = round(float(np.mean([r[f"frame_f1_{path}"] for r in mine])), 4)
            row[f"event_f1_{path}"] = round(float(np.mean([r[f"event_f1_{path}"] for r in mine])), 4)
            row[f"ms_{path}"] = round(float(np.median(spent[(res, path)])), 3)
        row["frame_f1_delta"] = round(row["frame_f1_new"] - row["frame_f1_old"], 4)
        row["event_f1_delta"] = round(row["event_f1_new"] - row["event_f1_old"], 4)
        row["worst_event_f1_delta"] = min(r["event_f1_delta"] for r in mine)
        cams = sorted({r["camera"] for r in mine})
        for path in PATHS:
            row[f"agree_native_{path}"] = round(float(np.mean(
                [agreement(records[(c, res, path)], records[(c, "native", "new")])[0] for c in cams])), 4)
        pairs = [agreement(records[(c, res, "new")], records[(c, res, "old")]) for c in cams]
        row["label_agreement_new_old"] = round(float(np.mean([p[0] for p in pairs])), 4)
        row["max_score_diff_new_old"] = round(max(p[1] for p in pairs), 4)
        summary.append(row)
    return rows, summary


def measure_real_clip(runtime: StemRuntime, specs: list[dict], frames: int) -> list[dict]:
    """vtest.avi at its own size (768x576), 643x481 and 1080p: how often the paths agree on real detail."""
    fps = 10.0
    all_apps = [{**s, "fps": fps} for s in specs]  # every app on every frame
    out = []
    for clip in camera_clips("vtest", str(VTEST), fps, frames, ["native", "odd", "1080"]):
        recs = {path: run_clip(runtime, clip, path, all_apps, fps)[0] for path in PATHS}
        row: dict = {"resolution": clip.resolution, "frames": len(clip.jpegs)}
        for path, other in [*((p, "old") for p in list(PATHS)[1:]), ("new", "full_area")]:  # last: the DCT scale alone
            same, diff = agreement(recs[path], recs[other])
            row[f"label_agreement_{path}_{other}"] = round(same, 4)
            row[f"max_score_diff_{path}_{other}"] = round(diff, 4)
        out.append(row)
    return out


def _plot(summary: list[dict], path: Path) -> None:
    from stemcell.eval.plotting import plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(summary))
    for ax, metric in zip(axes, ("frame_f1", "event_f1")):
        for i, p in enumerate(PATHS):
            ax.bar(x + (i - (len(PATHS) - 1) / 2) * 0.2, [r[f"{metric}_{p}"] for r in summary], 0.2, label=p)
        ax.set_xticks(x, [r["resolution"] for r in summary])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("JPEG resolution")
        ax.set_title(f"demo cameras, mean {metric.replace('_', ' ')}")
        ax.legend(fontsize=8)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="configs/ci.yaml's package, 2 + 1 cameras, 10 s each, 60 real-clip frames")
    parser.add_argument("--config", type=Path, help="train config (default configs/demo.yaml; --quick configs/ci.yaml)")
    parser.add_argument("--workdir", type=Path,
                        help="package cache + exported video (default runs/resize_accuracy[-quick])")
    parser.add_argument("--cameras", type=int,
                        help="synthetic cameras, plus the demo's file camera (default 4; --quick 2)")
    parser.add_argument("--duration", type=float, help="seconds of every camera (default 60; --quick 10)")
    parser.add_argument("--budget-models", type=float, default=1.0, help="the demo's plan budget (default 1)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = args.config or REPO / "configs" / ("ci.yaml" if args.quick else "demo.yaml")
    workdir = args.workdir or Path("runs") / ("resize_accuracy-quick" if args.quick else "resize_accuracy")
    duration = args.duration or (10.0 if args.quick else 60.0)
    cameras = args.cameras or (2 if args.quick else 4)

    started = time.perf_counter()
    torch.set_num_threads(1)
    package = obtain_package(config, workdir, use_ray=False)
    print(f"package ready after {time.perf_counter() - started:.0f} s", flush=True)
    schedule = plan(package, [a.name for a in package.manifest.apps], args.budget_models)
    specs = [{"app": c.app, "branchpoint": c.branchpoint, "fps": c.fps} for c in schedule.choices]
    runtime = StemRuntime(package, device="cpu")
    rows, summary = measure_demo(package, runtime, specs, workdir, cameras, duration, list(RESOLUTIONS))
    real = measure_real_clip(runtime, specs, 60 if args.quick else 300) if VTEST.is_file() else []

    print_table(rows, ["resolution", "camera", "app", "analysed", *(f"frame_f1_{p}" for p in PATHS),
                       *(f"event_f1_{p}" for p in PATHS), "frame_f1_delta", "event_f1_delta", "seen_in_training"],
                title="Per camera and app (the demo's table), each path side by side")
    print_table(summary, ["resolution", *(f"frame_f1_{p}" for p in PATHS), *(f"event_f1_{p}" for p in PATHS),
                          "frame_f1_delta", "event_f1_delta", "worst_event_f1_delta",
                          *(f"agree_native_{p}" for p in PATHS), "label_agreement_new_old", "max_score_diff_new_old",
                          *(f"ms_{p}" for p in PATHS)],
                title=f"Mean over the demo's cameras and apps (input {runtime.input_size} px); "
                      "ms = JPEG -> model input, median")
    if real:
        print_table(real, title=f"Real clip {VTEST.name}: the package's own answers, each path against `old`, "
                                "and `new` against `full_area` (the DCT scale alone)")
    result = {"input_size": runtime.input_size, "config": str(config), "duration_s": duration,
              "paths": list(PATHS), "summary": summary, "real_clip": real,
              "min_event_f1_delta": min(r["event_f1_delta"] for r in summary),
              "min_frame_f1_delta": min(r["frame_f1_delta"] for r in summary),
              "seconds_total": round(time.perf_counter() - started, 1)}
    save_results({**result, "rows": rows}, args.out, rows=rows)
    _plot(summary, args.out.with_suffix(".png"))
    print(f"\nmean F1 delta new - old: frame {result['min_frame_f1_delta']:+.4f}, "
          f"event {result['min_event_f1_delta']:+.4f} at worst over resolutions; "
          f"{result['seconds_total']:.0f} s; results {args.out}")


if __name__ == "__main__":
    main()

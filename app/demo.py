"""`stemcell demo`: the whole system on one machine, no GPU and no downloads needed.

Six steps, each printed as it starts: local Ray (with the dashboard), the M-Package (trained once,
then reused from the cache), a Mainstream plan, the Serve app, cameras streaming over HTTP (four
synthetic cameras the apps were fine-tuned on, and one camera they never saw, exported to an mp4
and read back through OpenCV exactly as a real file or RTSP camera is), and a report scored
against the world's ground truth.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from stemcell.config import TrainConfig, load_config
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.stream_score import StreamRecord, score_stream
from stemcell.package import MPackage, PackageError, load_package
from stemcell.package.planning import problem_from_manifest
from stemcell.scheduling import Schedule, format_schedule, get_scheduler
from stemcell.world import CLASSES, World, WorldConfig, export_camera, read_labels

log = logging.getLogger(__name__)

SERVE_TEMPLATE = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"


@dataclass(frozen=True)
class DemoCamera:
    """One streaming camera of the demo: where its frames come from and its ground truth."""

    camera_id: str
    source: str  # what `stemcell stream --source` takes
    truth: np.ndarray  # bool (frames, classes) from ts = 0 at the stream's fps
    seen_in_training: bool


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/6] {text}", flush=True)


def obtain_package(config_path: Path, workdir: Path, use_ray: bool) -> MPackage:
    """Reuse the package cached in `workdir/pkg` when it verifies, else run the M-Trainer."""
    pkg_dir = workdir / "pkg"
    try:
        package = load_package(pkg_dir)
        print(f"reusing cached M-Package {pkg_dir} (delete it to retrain)")
        return package
    except PackageError as exc:
        print(f"training a new M-Package in {pkg_dir} ({exc}); this takes a few minutes on 2 cores")
    from stemcell.training.mtrainer import run_trials_locally, train_package

    config = load_config(config_path, TrainConfig)
    runner = run_trials_locally
    if use_ray:
        from actors.trial_runner import RayTrialRunner

        runner = RayTrialRunner(config.trainer.cpus_per_trial, config.trainer.gpus_per_trial)
    train_package(config, pkg_dir, runner)
    return load_package(pkg_dir)


def plan(package: MPackage, apps: list[str], budget_models: float) -> Schedule:
    """Mainstream greedy for the demo's apps with a budget of `budget_models` full models at full rate."""
    m = package.manifest
    batch = 8 if 8 in m.latency.batch_sizes else max(m.latency.batch_sizes)
    full_model_s = sum(m.latency.per_frame_segment_s(batch)) + m.latency.head_s[str(batch)] / batch
    problem = problem_from_manifest(m, apps, budget_models * full_model_s * m.fps, batch_size=batch)
    schedule = get_scheduler("mainstream")(problem)
    print(format_schedule(schedule))
    return schedule


def demo_cameras(package: MPackage, count: int, duration_s: float, video_dir: Path) -> list[DemoCamera]:
    """`count` synthetic cameras of the package's world, plus one unseen camera as an mp4 file."""
    w = package.manifest.world
    trained_on = int(w["num_cameras"])
    unseen = max(count, trained_on)  # the file camera is one the apps were never fine-tuned on
    config = WorldConfig(seed=int(w["seed"]), num_cameras=unseen + 1, height=int(w["height"]),
                         width=int(w["width"]), fps=float(w["fps"]), duration_s=float(w["duration_s"]))
    world = World(config)
    query = f"seed={config.seed}&size={config.height}x{config.width}&fps={config.fps:g}&duration={config.duration_s:g}"
    cameras = [DemoCamera(f"cam-{c}", f"synthetic:{c}?{query}", world.camera(c).presence(), c < trained_on)
               for c in range(count)]
    frames = min(world.camera(unseen).num_frames, int((duration_s + 15) * config.fps))
    mp4, labels = export_camera(world.camera(unseen), video_dir, 0, frames, name=f"camera{unseen:02d}")
    cameras.append(DemoCamera("cam-file", str(mp4), read_labels(labels).presence(), False))
    return cameras


def _serve_config(workdir: Path, package_dir: Path, port: int) -> Path:
    """The bundled serve.yaml, pointed at the demo's package and state, listening on loopback only."""
    config = yaml.safe_load(SERVE_TEMPLATE.read_text())
    config.update(package_dir=str(package_dir.resolve()), state_path=str((workdir / "serve" / "state.db").resolve()),
                  app_name="stemcell-demo")
    config["http"] = {**config.get("http", {}), "host": "127.0.0.1", "port": port}
    path = workdir / "serve.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _stream_all(cameras: list[DemoCamera], tokens: dict[str, str], url: str, fps: float,
                duration_s: float) -> dict[str, tuple[list[StreamRecord], float]]:
    """Every camera streams at once (one thread each, as separate camera boxes would)."""
    from app.streamer import run_stream

    out: dict[str, tuple[list[StreamRecord], float]] = {}
    lock = threading.Lock()

    def one(cam: DemoCamera) -> None:
        records: list[StreamRecord] = []

        def keep(ts: float, ms: float, answer: dict) -> None:
            with lock:
                records.append(StreamRecord(ts, ms, tuple(answer["results"])))

        summary = run_stream(cam.source, cam.camera_id, url, tokens[cam.camera_id], fps, duration_s,
                             report_every_s=15.0, on_result=keep)
        with lock:
            out[cam.camera_id] = (records, summary["duration_s"])

    threads = [threading.Thread(target=one, args=(c,), name=f"demo-{c.camera_id}") for c in cameras]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _plot(rows: list[dict], path: Path) -> None:
    from stemcell.eval.plotting import plt

    fig, (ax_f1, ax_ms) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['camera']}/{r['app']}" for r in rows]
    x = np.arange(len(rows))
    ax_f1.bar(x - 0.2, [r.get("event_f1", 0) for r in rows], 0.4, label="event F1 (measured)")
    ax_f1.bar(x + 0.2, [r.get("predicted_f1", 0) for r in rows], 0.4, label="event F1 (planner's model)")
    ax_f1.set_xticks(x, labels, fontsize=7, rotation=60, ha="right")
    ax_f1.set_ylim(0, 1.05)
    ax_f1.legend(fontsize=8)
    ax_f1.set_title("Per camera and app: event F1 against ground truth")
    cams = sorted({r["camera"] for r in rows})
    first = [next(r for r in rows if r["camera"] == c) for c in cams]
    ax_ms.bar(np.arange(len(cams)) - 0.2, [r.get("p50_ms", 0) for r in first], 0.4, label="p50")
    ax_ms.bar(np.arange(len(cams)) + 0.2, [r.get("p99_ms", 0) for r in first], 0.4, label="p99")
    ax_ms.set_xticks(np.arange(len(cams)), cams, fontsize=8)
    ax_ms.set_ylabel("HTTP round trip (ms)")
    ax_ms.legend(fontsize=8)
    ax_ms.set_title("Latency per camera")
    save_plot(fig, path)


def run_demo(args: argparse.Namespace) -> int:
    from ray import serve

    from app.runtime import ensure_ray
    from app.serve_app import run_serve
    from stemcell.client import Admin

    started = time.monotonic()
    workdir: Path = args.workdir
    _step(1, "starting Ray")
    dashboard = ensure_ray(dashboard=True)
    print(f"Ray dashboard: {dashboard or 'see your cluster (Ray was already connected)'}")

    _step(2, "M-Package: reuse or train candidates for every (app, branchpoint)")
    package = obtain_package(args.config, workdir, use_ray=True)
    from app.reports import print_manifest_summary

    print_manifest_summary(package.manifest)
    apps = [a.name for a in package.manifest.apps]

    _step(3, "planning with Mainstream greedy")
    schedule = plan(package, apps, args.budget_models)
    fps = float(package.manifest.fps)

    _step(4, "starting Ray Serve")
    os.environ.setdefault("STEMCELL_ADMIN_TOKEN", secrets.token_urlsafe(32))
    run_serve(str(_serve_config(workdir, workdir / "pkg", args.port)), block=False)
    url = f"http://127.0.0.1:{args.port}"
    try:
        _step(5, f"streaming {args.cameras} synthetic cameras + 1 video-file camera for {args.duration:g} s")
        cameras = demo_cameras(package, args.cameras, args.duration, workdir / "video")
        specs = [{"app": c.app, "branchpoint": c.branchpoint, "fps": c.fps} for c in schedule.choices]
        tokens = {}
        with Admin(url, os.environ["STEMCELL_ADMIN_TOKEN"]) as admin:
            for cam in cameras:
                tokens[cam.camera_id] = admin.add_camera(cam.camera_id, specs, fps=fps, token=secrets.token_urlsafe(24))["token"]
        streamed = _stream_all(cameras, tokens, url, fps, args.duration)
    finally:  # only the demo's app: on a shared cluster other Serve apps keep running
        serve.delete("stemcell-demo")

    _step(6, "report")
    columns = {a.name: CLASSES.index(a.classes[0]) for a in package.manifest.apps}
    predicted = {c.app: c.predicted_f1 for c in schedule.choices}
    rows = []
    for cam in cameras:
        records, elapsed = streamed[cam.camera_id]
        for row in score_stream(cam.camera_id, records, cam.truth, columns, fps, elapsed):
            rows.append({**row, "predicted_f1": round(predicted[row["app"]], 3), "seen_in_training": cam.seen_in_training})
    out = workdir / "results" / "demo.json"
    save_results({"dashboard": dashboard, "url": url, "plan": format_schedule(schedule), "rows": rows}, out, rows=rows)
    _plot(rows, out.with_suffix(".png"))
    print_table(rows, columns=["camera", "app", "frames", "analysed", "fps", "p50_ms", "p99_ms", "frame_f1",
                               "event_f1", "predicted_f1", "seen_in_training"],
                title="Per camera and app, scored against the world's ground truth")
    print(f"\nresults: {out} and {out.with_suffix('.parquet')}; plot: {out.with_suffix('.png')}")
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0

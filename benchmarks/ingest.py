"""Pulled cameras: N loopback RTSP streams (H.264, 720p, 10 fps) ingested and analysed, against the
physical limit of decoding them here.

    python benchmarks/ingest.py --quick --out out/ingest.json            # 16 streams (one actor)
    python benchmarks/ingest.py --quick --streams 2,8,16 --out out/ingest.json   # the curve

Several stream counts can be measured in one run (`--streams 2,8,16,32` in full mode; `--quick` measures
16, one actor's realistic share, to stay under 90 s): cameras are added to the same ingest actor and executor up to each count, and each count gets its own window and its
own decode limit on the same first-n streams. `rows` lists `{streams, fps_analysed_per_core,
decode_limit_fps_per_core, ratio}` (and the batch size, CPU per frame and load) for every count; every
top-level key is the *largest* count's, `ratio_to_decode_limit` included. An ingest actor is sized for
`ingest.cameras_per_actor` (64) cameras, and what ingestion adds beyond decoding is mostly fixed per
call and per process (an idle Ray actor, an actor call per batch, one forward per batch), so it is
shared by more frames as streams are added: 2 streams is the least favourable case (full mode's `rows`).

* `decode_limit_fps_per_core`: OpenCV/FFmpeg alone pulling the same N RTSP streams from the same
  server (one reader thread each, the actor's FFmpeg options, CPU time of this whole process before
  Ray starts) and turning each frame into model input with the same two functions the ingest actor
  uses (`stemcell.data.dataset.resize_square` on the decoded frame, then `stemcell.models.inputs.to_input`
  at model size): frames per CPU-second. Like with like: the same streams, demuxing and
  depacketising included, at the same rate. `decode_limit_file_fps_per_core` is the same work reading
  the clip from its file as fast as it goes (no network, no waiting: a higher bar, shown for reference).
* `fps_analysed_per_core`: frames the executor analysed while the CameraIngest actor pulled the N
  streams from GStreamer's RTSP server, per CPU-second of the ingest actor *and* the executor: user +
  system time of both whole processes from /proc/<pid>/stat over the window, every thread counted
  (FFmpeg's decoder threads, Ray's own threads, the fixed cost of an idle Ray actor, which
  `cpu_s_per_s_executor_idle` shows before any camera is registered). `ratio_to_decode_limit` is the
  quotient (goal >= 0.8: ingestion and inference add little to the decoding itself);
  `ratio_ingest_to_decode_limit` counts the ingest actor's CPU alone; `frames_per_batch` is the
  executor's mean batch over the window. The event hub's CPU (`cpu_s_event_hub`) is shown, not
  counted: it serves every camera's events, pushed ones too. The decode limits are measured in this
  process just before Ray starts (no Ray threads in its CPU time), every count's one after the other,
  then the windows; on a shared box both move with its load (`load_average`, per row too).
  `cpu_by_thread` splits the window's CPU by thread; `--profile DIR` also records both actors with
  py-spy over the window (`profile_top`: the functions sampled most).
* `reconnect_s` (after the last window): the RTSP server killed, restarted; seconds from its restart to the next analysed
  frame (goal < 5).
* `bulk_register_1000_s`: one `POST /admin/cameras:bulk` of 1,000 pulled cameras (registered
  disabled, so the box does not start 1,000 reader threads; everything else is the full path:
  source checks, executor registration, store writes, one plan).
* `event_webhook_p99_ms`: a pulled file camera blinking (1 s bright, 1 s dark; the package's 'car'
  app learnt brightness) makes events start and end; a webhook receiver on loopback timestamps
  each signed delivery: p99 of receipt time minus the event's start (or end) frame time.

Needs the `ffmpeg` CLI and GStreamer's RTSP server (`.ci/run` installs both). `--quick` takes ~20 s
more per stream count on top of one count's < 90 s on idle cores once the package and clip exist
(`--cache DIR` builds them once; `run_s` is the run's time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import ray
import torch
import yaml

from benchmarks.harness import deploy
from benchmarks.procstat import PySpy, ThreadCpu, cpu_s, top_functions
from stemcell.data.dataset import resize_square
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.ingest import check_source
from stemcell.models.inputs import to_input
from tests.helpers.builders import decisive_package
from tests.helpers.streams import RtspServer, h264_clip

APP_NAME, NAMESPACE, TOKEN_ENV = "stemcell-ingest-bench", "stemcell-ingest-bench", "STEMCELL_INGEST_BENCH_TOKEN"
SIZE, FPS = (1280, 720), 10
IDLE_S = 2.0  # the executor's CPU is measured this long before any camera is registered


def _model_input(frame: np.ndarray, input_size: int) -> None:
    """The ingest actor's work on one decoded BGR frame (it batches the `to_input`; one frame here)."""
    to_input(np.ascontiguousarray(resize_square(frame, input_size)[None, ..., ::-1]), input_size)


def decode_limit(clip: Path, frames: int, input_size: int) -> float:
    """Frames decoded from the file and made model input per CPU-second (this process), as fast as it goes."""
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    started, done = time.process_time(), 0  # the process: FFmpeg decodes on threads of its own
    while done < frames:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        _model_input(frame, input_size)
        done += 1
    seconds = time.process_time() - started
    cap.release()
    return done / seconds


def rtsp_decode_limit(urls: Sequence[str], seconds: float, input_size: int) -> float:
    """Frames pulled from `urls` (a thread each, as the actor reads them) and made model input, per
    CPU-second of this process, over `seconds` after every stream delivered its first frame."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = check_source(urls[0], []).capture_options()
    caps = [cv2.VideoCapture(u, cv2.CAP_FFMPEG) for u in urls]
    counts, stop = [0] * len(urls), threading.Event()

    def read(i: int) -> None:
        while not stop.is_set():
            ok, frame = caps[i].read()
            if ok:
                _model_input(frame, input_size)
                counts[i] += 1

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(urls))]
    for t in threads:
        t.start()
    _wait(lambda: min(counts) > 2 * FPS, 30)  # past the first keyframe and FFmpeg's probing
    frames0, cpu0 = sum(counts), time.process_time()
    time.sleep(seconds)
    frames, cpu = sum(counts) - frames0, time.process_time() - cpu0
    stop.set()
    for t in threads:
        t.join(5)
    for cap in caps:
        cap.release()
    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    return frames / cpu


def _analysed(http: httpx.Client, camera_id: str) -> int:
    return _batches(http, camera_id)[0]


def _batches(http: httpx.Client, camera_id: str) -> tuple[int, int]:
    """(frames, batches) the camera's executor has run so far (all its cameras)."""
    stats = http.get(f"/cameras/{camera_id}/status").json()["executor_stats"]
    return stats["frames"], stats["batches"]


def _fleet(http: httpx.Client) -> list[dict[str, Any]]:
    return http.get("/admin/cameras", params={"limit": 1000}).json()["cameras"]


def _wait(predicate: Any, timeout_s: float, poll_s: float = 0.05) -> float:
    """Seconds until `predicate()` holds (raises after `timeout_s`)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(poll_s)
    return time.monotonic() - started


def _pids(names: tuple[str, ...]) -> list[int]:
    """Process ids of the named actors (asked through Ray's `__ray_call__`)."""
    return ray.get([ray.get_actor(n, namespace=NAMESPACE).__ray_call__.remote(lambda _self: os.getpid())
                    for n in names])


def blink_clip(path: Path, seconds: int = 10) -> Path:
    """1 s of bright noise, 1 s of dark noise, ... (mp4v, 64x64, 10 fps)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    rng = np.random.default_rng(0)
    for i in range(seconds * FPS):
        low = 128 if (i // FPS) % 2 == 0 else 0
        writer.write(rng.integers(low, low + 128, (64, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def webhook_latencies(http: httpx.Client, clip: Path, seconds: float) -> list[float]:
    """Milliseconds from each event's start/end frame to its webhook delivery here, for `seconds`."""
    got: list[tuple[float, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            got.append((time.time(), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http.post("/admin/webhooks", json={"url": f"http://127.0.0.1:{server.server_port}/hook",
                                           "secret": "bench-secret-0123456789", "apps": ["car"]}).raise_for_status()
        time.sleep(1.0)  # the ingest actor re-reads the webhook list every webhooks.refresh_s
        http.post("/admin/cameras", json={"camera_id": "blink", "apps": ["car"], "fps": FPS,
                                          "source": {"url": str(clip)}}).raise_for_status()
        time.sleep(seconds)
    finally:
        server.shutdown()
    out = []
    for received, body in got:
        doc = json.loads(body)
        event = doc["event"]
        at = event["start_ts"] if doc["type"] == "event.start" else event["end_ts"]
        out.append(1e3 * (received - at))
    return out


def inputs(home: Path, clip_s: float) -> tuple[Path, Path]:
    """The package and the clip, built in `home` unless already there (`--cache`: built once, reused)."""
    package, clip = home / "pkg", home / f"clip-{clip_s:g}s.mp4"
    if not (package / "manifest.json").is_file():
        shutil.rmtree(package, ignore_errors=True)  # an interrupted build
        decisive_package(package)
    if not clip.is_file():
        h264_clip(clip, clip_s, size=SIZE, fps=FPS)
    return package, clip


def measure_window(http: httpx.Client, names: tuple[str, ...], window_s: float,
                   profile: Path | None) -> dict[str, Any]:
    """CPU of the named actors (by process and by thread) and the executor's frames and batches over one
    window of `window_s` seconds, with the fleet as it stood at its end."""
    pids = _pids(names)
    threads = [ThreadCpu(p) for p in pids]
    spies = [PySpy(p, window_s, profile / f"{n}.txt") for n, p in zip(names, pids)] if profile else []
    cpu0, (frames0, batches0) = [cpu_s(p) for p in pids], _batches(http, "cam0")
    time.sleep(window_s)
    split = [cpu_s(p) - c for p, c in zip(pids, cpu0)]
    by_thread = {n: t.top() for n, t in zip(names, threads)}
    hot = {n: top_functions(spy.out) for n, spy in zip(names, spies) if spy.wait()}
    frames1, batches1 = _batches(http, "cam0")
    return {"split": split, "frames": frames1 - frames0, "batches": max(batches1 - batches0, 1),
            "cpu_by_thread": by_thread, "profile_top": hot, "fleet": _fleet(http)}


def row(streams: int, window: dict[str, Any], limit: float) -> dict[str, Any]:
    """One stream count's figures: its window (ingest actor + executor CPU) against its own decode limit."""
    frames, cpu = window["frames"], window["split"][0] + window["split"][1]
    per_core = frames / cpu if cpu > 0 else 0.0
    return {"streams": streams, "fps_analysed_per_core": round(per_core, 2),
            "decode_limit_fps_per_core": round(limit, 2), "ratio": round(per_core / limit, 3),
            "fps_analysed": round(frames / window["window_s"], 2),
            "frames_per_batch": round(frames / window["batches"], 2),
            "cpu_ms_per_frame_ingest": round(1e3 * window["split"][0] / max(frames, 1), 2),
            "cpu_ms_per_frame_executor": round(1e3 * window["split"][1] / max(frames, 1), 2),
            "load_average": window["load_average"]}


def run(root: Path, counts: Sequence[int], window_s: float, clip_s: float, profile: Path | None = None,
        cache: Path | None = None) -> dict[str, Any]:
    """Every stream count in `counts` (ascending) measured in one sitting; the top-level figures are the
    largest count's (`--profile` records that window only)."""
    began = time.perf_counter()
    package, clip = inputs(cache or root, clip_s)
    print(f"package and clip ready after {time.perf_counter() - began:.1f} s", flush=True)
    streams = max(counts)
    server = RtspServer(clip, tuple(f"s{i}" for i in range(streams))).start()
    try:
        torch.set_num_threads(1)  # as in the ingest actor: Ray gives an actor of <= 1 CPU one OpenMP thread
        file_limit = decode_limit(clip, 10 * FPS, 32)
        # each count's limit on the same first-n streams the actor will pull, before Ray starts (no Ray
        # threads in this process's CPU time)
        limits = {n: rtsp_decode_limit([server.url(f"s{i}") for i in range(n)], min(window_s, 6.0), 32)
                  for n in counts}
        print(f"decode limit per core (RTSP): {limits}, {file_limit:.1f} (file)", flush=True)
        config = root / "serve.yaml"
        config.write_text(yaml.safe_dump({
            "package_dir": str(package), "state_path": str(root / "state.db"), "admin_token_env": TOKEN_ENV,
            "app_name": APP_NAME, "ingress": {"num_cpus": 0.25},
            "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 1, "namespace": NAMESPACE},
            "ingest": {"cameras_per_actor": streams + 1, "num_cpus": 0.5, "backoff_base_s": 0.2,
                       "backoff_cap_s": 1.0, "allowed_dirs": [str(root)]},
            "webhooks": {"allow_private": True, "refresh_s": 0.5},
        }))
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        app = deploy(config)
        print(f"serving after {time.perf_counter() - began:.1f} s", flush=True)
        with httpx.Client(base_url=app.url, headers={"Authorization": f"Bearer {app.admin_token}"}, timeout=300) as http:
            (executor,) = _pids(("stemcell-executor-0",))  # its CPU with no camera: the fixed cost of a Ray actor
            idle0 = cpu_s(executor)
            time.sleep(IDLE_S)
            executor_idle = (cpu_s(executor) - idle0) / IDLE_S
            windows: dict[int, dict[str, Any]] = {}
            for n in counts:  # cameras added to the same actor and executor up to n, then a window
                for i in range(len(_fleet(http)), n):
                    http.post("/admin/cameras", json={"camera_id": f"cam{i}", "apps": ["car"], "fps": FPS,
                                                      "source": {"url": server.url(f"s{i}")}}).raise_for_status()
                _wait(lambda: all(c["state"] == "streaming" for c in _fleet(http)), 60, 0.3)
                time.sleep(2.0)  # warm: every reader past its first keyframe
                windows[n] = measure_window(http, ("stemcell-ingest-0", "stemcell-executor-0", f"{APP_NAME}-events"),
                                            window_s, profile if n == streams else None)
                windows[n].update(window_s=window_s, load_average=[round(x, 2) for x in os.getloadavg()])
                print(f"{n} streams: {row(n, windows[n], limits[n])}", flush=True)
            server.stop()
            _wait(lambda: all(c["state"] != "streaming" for c in _fleet(http)), 30, 0.2)
            time.sleep(1.0)
            before = _analysed(http, "cam0")
            server.start()
            reconnect_s = _wait(lambda: _analysed(http, "cam0") > before, 30)
            bulk = [{"camera_id": f"bulk-{i:04d}", "apps": ["car"], "enabled": False,
                     "source": {"url": f"rtsp://127.0.0.1:9/cam{i}"}} for i in range(1000)]
            started = time.perf_counter()
            http.post("/admin/cameras:bulk", json={"cameras": bulk}).raise_for_status()
            bulk_s = time.perf_counter() - started
            webhook_ms = webhook_latencies(http, blink_clip(root / "blink.mp4"), window_s)
    finally:
        server.stop()
        ray.shutdown()
    rows = [row(n, windows[n], limits[n]) for n in counts]
    top, last, limit = rows[-1], windows[streams], limits[streams]
    split, frames, fleet = last["split"], last["frames"], last["fleet"]
    per_core = top["fps_analysed_per_core"]
    run_s = time.perf_counter() - began
    return {"streams": streams, "resolution": f"{SIZE[0]}x{SIZE[1]}", "stream_fps": FPS, "window_s": window_s,
            "rows": rows,
            "frames_analysed": frames, "frames_per_batch": top["frames_per_batch"],
            "cpu_s": round(split[0] + split[1], 2),
            "cpu_s_ingest": round(split[0], 2), "cpu_s_executor": round(split[1], 2),
            "cpu_ms_per_frame_ingest": top["cpu_ms_per_frame_ingest"],
            "cpu_ms_per_frame_executor": top["cpu_ms_per_frame_executor"],
            "decode_limit_cpu_ms_per_frame": round(1e3 / limit, 2),
            "cpu_s_event_hub": round(split[2], 2), "cpu_s_per_s_executor_idle": round(executor_idle, 3), "fps_analysed": top["fps_analysed"],
            "fps_analysed_per_core": per_core, "decode_limit_fps_per_core": top["decode_limit_fps_per_core"],
            "decode_limit_file_fps_per_core": round(file_limit, 2), "ratio_to_decode_limit": top["ratio"],
            "ratio_to_file_decode_limit": round(per_core / file_limit, 3),
            # the ingest actor alone (decode, to_input, send) against the same limit: what ingestion adds
            "ratio_ingest_to_decode_limit": round(frames / split[0] / limit, 3) if split[0] > 0 else None, "reconnect_s": round(reconnect_s, 2),
            "bulk_register_1000_s": round(bulk_s, 2),
            "event_webhook_p99_ms": round(float(np.percentile(webhook_ms, 99)), 1) if webhook_ms else None,
            "event_webhook_deliveries": len(webhook_ms),
            "frames_dropped": sum(c["frames_dropped"] for c in fleet),
            "fleet": [{k: c[k] for k in ("camera_id", "state", "fps_in", "fps_analysed", "frames_dropped")} for c in fleet],
            "run_s": round(run_s, 1), "cpu_by_thread": last["cpu_by_thread"], "profile_top": last["profile_top"],
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="16 streams on one ingest actor, an 8 s window (about 85 s on 2 idle cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (PNG beside it)")
    parser.add_argument("--streams", type=lambda v: sorted({int(n) for n in v.split(",")}),
                        help="stream counts, comma-separated, measured one after the other in one run "
                        "(default 16 quick, 2,8,16,32 full); the top-level figures are the largest count's")
    parser.add_argument("--cache", type=Path, help="build the package and the clip here once and reuse them "
                        "(the benchmark's inputs only: the measurement is the same)")
    parser.add_argument("--profile", type=Path, help="py-spy both actors over the window into this folder "
                        "(raw stacks; the top functions go in the JSON's profile_top)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    counts = args.streams or ([16] if args.quick else [2, 8, 16, 32])
    window_s, clip_s = (8.0, 20.0) if args.quick else (60.0, 120.0)
    with tempfile.TemporaryDirectory(prefix="stemcell-ingest-") as tmp:
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        result = run(Path(tmp), counts, window_s, clip_s, args.profile, args.cache)
    keys = ("fps_analysed_per_core", "decode_limit_fps_per_core", "ratio_to_decode_limit", "reconnect_s",
            "bulk_register_1000_s", "event_webhook_p99_ms", "fps_analysed", "frames_dropped", "cpu_s_ingest",
            "cpu_s_executor", "ratio_ingest_to_decode_limit", "decode_limit_file_fps_per_core",
            "ratio_to_file_decode_limit", "event_webhook_deliveries")
    print_table(result["rows"], ("streams", "fps_analysed_per_core", "decode_limit_fps_per_core", "ratio",
                                 "frames_per_batch", "load_average"), title="ingest: per stream count")
    print_table([{"key": k, "value": result[k]} for k in keys],
                title=f"ingest: {result['streams']} RTSP streams (the largest count), 720p, 10 fps")
    save_results(result, args.out)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    at = np.arange(len(result["rows"]))
    ax.bar(at - 0.2, [r["decode_limit_fps_per_core"] for r in result["rows"]], 0.4, color="grey", label="decode limit")
    ax.bar(at + 0.2, [r["fps_analysed_per_core"] for r in result["rows"]], 0.4, color="tab:blue",
           label="ingested + analysed")
    ax.set_xticks(at, [f"{r['streams']} streams\nratio {r['ratio']:.2f}" for r in result["rows"]])
    ax.set_ylabel("frames per CPU-second")
    ax.legend(loc="lower right")
    ax.set_title(f"RTSP 720p: ratio {result['ratio_to_decode_limit']:.2f} at {result['streams']} streams")
    save_plot(fig, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Make-before-break GPU reallocation under live HTTP traffic: does any request fail during a switch?

One local Ray instance (2 CPUs, one logical GPU), the Stemcell Serve app with one StemExecutor
holding 0.25 of the GPU, 4 cameras posting JPEG frames over HTTP at `--fps` each (open loop: a
camera sends its next frame on schedule, whatever happened to the previous one). While they
stream, the Planner changes the executor's share several times (`Planner.set_shares`): every
change creates a new executor actor with the new `num_gpus`, loads the cameras, warms it up,
switches the ingress over, drains and kills the old one. Then one full planning round
(`Planner.replan`: measured latencies -> Mainstream -> shares) runs under the same traffic.

Counted: every HTTP answer that is not 200 (and every transport error) is a failed request; the
client does not retry. `max_gap_ms` is the longest time any camera went without a successful
answer. Goal: failed_requests = 0.

`--transport direct` skips Serve: the cameras call the ingress's `ExecutorPool` (the code every
Serve replica runs, same routing and retry) from this process. `--quick` uses it with one share
change, because starting Serve alone takes ~30 s of a 60 s budget on 2 cores.

    python benchmarks/reallocation.py --quick --out out/recl/reallocation_quick.json
    python benchmarks/reallocation.py --out out/recl/reallocation.json      # HTTP, 5 changes
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray
import yaml
from ray import serve

from stemcell.control.contracts import CameraSpec
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.imaging import encode_jpeg
from stemcell.world import World, WorldConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_overhead import _speed_package  # noqa: E402 - the same small real M-Package as the overhead benchmark

TOKEN_ENV = "STEMCELL_BENCH_ADMIN_TOKEN"
NAMESPACE = "stemcell-realloc"
ROLE = "stemcell-executor-0"
Send = Callable[[int], Awaitable[int]]  # frame index -> status (200 or the failure)
Camera = Callable[[int, list[bytes]], Awaitable[Send]]  # camera index, its JPEGs -> its sender
SHARES_FULL = (0.5, 0.25, 0.75, 0.25, 0.5)  # each old+new pair fits on one GPU (make-before-break needs both)


def _config(root: Path, package: Path) -> Path:
    config_path = root / "serve.yaml"
    config_path.write_text(yaml.safe_dump({
        "package_dir": str(package), "state_path": str(root / "state.db"), "admin_token_env": TOKEN_ENV,
        "app_name": "stemcell-realloc", "ingress": {"num_cpus": 0.5},
        "executors": {"num_cpus": 0.5, "num_gpus": 0.25, "namespace": NAMESPACE, "max_wait_ms": 2},
    }))
    return config_path


def _apps(package: Path) -> list[str]:
    return [a["name"] for a in json.loads((package / "manifest.json").read_text())["apps"]]


def _deploy_http(config_path: Path, package: Path, cameras: int) -> Camera:
    """The Serve app; returns one `send(camera, i)` per camera posting JPEG i over HTTP."""
    # benchmarks/ is on sys.path when run as a script
    from ports import reserved_port, wait_listening

    from app.serve_app import build_app
    from stemcell.client import Admin

    os.environ[TOKEN_ENV] = secrets.token_urlsafe(32)
    with reserved_port() as port:  # held until Serve's proxy listens there (see benchmarks/ports.py)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config_path": str(config_path)}), name="stemcell-realloc", route_prefix="/")
        wait_listening(port)
    url = f"http://127.0.0.1:{port}"
    with Admin(url, os.environ[TOKEN_ENV], timeout=120.0) as admin:
        tokens = [admin.add_camera(f"cam-{c}", _apps(package), fps=10)["token"] for c in range(cameras)]

    async def open_camera(c: int, jpegs: list[bytes]) -> Send:
        headers = {"Authorization": f"Bearer {tokens[c]}", "Content-Type": "image/jpeg"}
        client = httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0)

        async def send(i: int) -> int:
            try:
                return (await client.post(f"/cameras/cam-{c}/frames", content=jpegs[i % len(jpegs)])).status_code
            except httpx.HTTPError as exc:
                print(f"  cam-{c}: {type(exc).__name__}", flush=True)
                return -1
        return send
    return open_camera


async def _deploy_direct(config: Any, package: Path, cameras: int) -> Camera:
    """The ingress's ExecutorPool in this process, cameras registered in the StateStore as the app does."""
    from actors.state_store import get_or_create_state_store
    from app.executors import ExecutorPool
    from app.service import read_routes
    from stemcell.imaging import decode_image

    store = get_or_create_state_store(str(config.state_path), namespace=NAMESPACE)

    async def registry(camera: str) -> CameraSpec | None:
        record = await store.get_camera.remote(camera)
        return None if record is None else CameraSpec.from_config(camera, record.config)

    pool = ExecutorPool(config.executors, str(package), registry, config.limits.max_queued_frames,
                        routes=lambda: read_routes(store), names=await read_routes(store))
    await pool.ready(config.executors.ready_timeout_s)
    branchpoints = {c.app: c.branchpoint for c in _candidates(package)}
    apps = [{"app": a, "branchpoint": branchpoints[a], "fps": 10.0} for a in _apps(package)]
    for c in range(cameras):
        await pool.add_camera(CameraSpec.from_config(f"cam-{c}", {"fps": 10.0, "apps": apps}))
        await store.put_camera.remote(f"cam-{c}", {"fps": 10.0, "apps": apps})

    async def open_camera(c: int, jpegs: list[bytes]) -> Send:
        frames = [decode_image(j, "image/jpeg") for j in jpegs]

        async def send(i: int) -> int:
            try:
                await pool.infer(f"cam-{c}", [frames[i % len(frames)]], None)
                return 200
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                print(f"  cam-{c}: {exc!r}"[:200], flush=True)
                return -1
        return send
    return open_camera


def _candidates(package: Path) -> list[Any]:
    """One candidate per app: the most shared one (what the ingress picks for a new camera)."""
    from stemcell.control.camera_plans import default_candidate
    from app.service import read_manifest

    manifest, _ = read_manifest(package)
    return [default_candidate(manifest, a.name) for a in manifest.apps]


async def _camera(send: Send, camera: str, fps: float, stop: asyncio.Event, log: list[dict[str, Any]],
                  t0: float) -> None:
    """Open loop at `fps`: each frame is its own task, so a slow answer does not delay the next frame."""
    async def post(i: int) -> None:
        sent = time.perf_counter()
        status = await send(i)
        log.append({"camera": camera, "sent_s": sent - t0, "done_s": time.perf_counter() - t0,
                    "latency_ms": 1e3 * (time.perf_counter() - sent), "status": status})

    tasks, i = [], 0
    while not stop.is_set():
        tasks.append(asyncio.create_task(post(i)))
        i += 1
        await asyncio.sleep(1.0 / fps)
    await asyncio.gather(*tasks)


def _max_gap_ms(log: list[dict[str, Any]], start_s: float, end_s: float) -> float:
    """Longest stretch any camera went without a successful answer, within [start, end]."""
    worst = 0.0
    for cam in sorted({r["camera"] for r in log}):
        done = sorted(r["done_s"] for r in log if r["camera"] == cam and r["status"] == 200)
        points = [start_s] + [d for d in done if start_s <= d <= end_s] + [end_s]
        worst = max(worst, max(b - a for a, b in zip(points, points[1:])))
    return 1e3 * worst


async def _run(args: argparse.Namespace, config_path: Path, package: Path, jpegs: list[list[bytes]],
               shares: tuple[float, ...], settle_s: float) -> tuple[list[dict], list[dict], dict[str, Any]]:
    from actors.planner import get_or_create_planner
    from stemcell.serve_config import PlannerSection, load_serve_config

    config = load_serve_config(config_path)
    if args.transport == "http":
        open_camera = await asyncio.to_thread(_deploy_http, config_path, package, args.cameras)  # serve.run blocks
    else:
        open_camera = await _deploy_direct(config, package, args.cameras)
    planner = get_or_create_planner(config, PlannerSection(window_s=0, grace_s=1.0, total_gpu=1.0))
    await planner.current_plan.remote()
    print(f"{args.transport}: serving, planner up", flush=True)
    log: list[dict[str, Any]] = []
    stop = asyncio.Event()
    t0 = time.perf_counter()
    sends = [await open_camera(c, jpegs[c]) for c in range(args.cameras)]
    streams = [asyncio.create_task(_camera(send, f"cam-{c}", args.fps, stop, log, t0)) for c, send in enumerate(sends)]
    await asyncio.sleep(settle_s)
    switches: list[dict[str, Any]] = []
    for share in shares:
        began = time.perf_counter() - t0
        for report in await planner.set_shares.remote({ROLE: share}):
            switches.append({**report.as_dict(), "began_s": began, "ended_s": time.perf_counter() - t0, "kind": "set_shares"})
        print(f"  share -> {share}: {switches[-1]['total_s']:.1f} s (warm {switches[-1]['warm_s']:.1f} s)", flush=True)
        await asyncio.sleep(settle_s)
    began = time.perf_counter() - t0
    view = await planner.replan.remote()
    switches += [{**r, "began_s": began, "ended_s": time.perf_counter() - t0, "kind": "replan"}
                 for r in view["last_switches"]]
    print(f"  replan: decision {view['last_decision_ms']:.1f} ms, shares "
          f"{ {r: s['share'] for r, s in view['roles'].items()} }", flush=True)
    await asyncio.sleep(settle_s)
    stop.set()
    await asyncio.gather(*streams)
    return log, switches, view


def _plot(log: list[dict], switches: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4))
    ok = [r for r in log if r["status"] == 200]
    bad = [r for r in log if r["status"] != 200]
    ax.scatter([r["sent_s"] for r in ok], [r["latency_ms"] for r in ok], s=4, label="200")
    if bad:
        ax.scatter([r["sent_s"] for r in bad], [r["latency_ms"] for r in bad], s=12, c="red", label="failed")
    for s in switches:
        ax.axvspan(s["began_s"], s["ended_s"], color="orange", alpha=0.2)
        ax.text(s["began_s"], ax.get_ylim()[1] * 0.9, f"{s['old_share']:g}->{s['new_share']:g}", fontsize=7)
    ax.set_xlabel("time (s); shaded: a make-before-break switch in progress")
    ax.set_ylabel("request latency (ms)")
    ax.set_title(f"{len(log)} HTTP requests, {len(bad)} failed, {len(switches)} share changes")
    ax.legend(fontsize=8)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="1 share change instead of 5, direct transport unless given (< 60 s on 2 cores)")
    parser.add_argument("--transport", choices=("http", "direct"),
                        help="cameras post JPEGs over HTTP (default) or call the ExecutorPool (default with --quick)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--cameras", type=int, default=4, help="cameras streaming over HTTP")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second each camera posts")
    parser.add_argument("--settle-s", type=float, help="traffic before/between/after changes (default 1 quick, 3 full)")
    args = parser.parse_args()
    args.transport = args.transport or ("direct" if args.quick else "http")
    shares = SHARES_FULL[:1] if args.quick else SHARES_FULL
    settle_s = args.settle_s or (1.0 if args.quick else 3.0)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stemcell-realloc-") as tmp:
        root = Path(tmp)
        package = _speed_package(root / "pkg")
        world = World(WorldConfig(seed=0, num_cameras=args.cameras, height=128, width=128, duration_s=60.0))
        jpegs = [[encode_jpeg(world.camera(c).frame(i * 7)) for i in range(8)] for c in range(args.cameras)]
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            log, switches, view = asyncio.run(_run(args, _config(root, package), package, jpegs, shares, settle_s))
        finally:
            ray.shutdown()

    end_s = max(r["done_s"] for r in log)
    failed = [r for r in log if r["status"] != 200]
    moved = [s for s in switches if s["ok"]]
    summary = {
        "requests": len(log), "failed_requests": len(failed),
        "max_gap_ms": _max_gap_ms(log, settle_s / 2, end_s),
        "max_gap_ms_during_switches": max((_max_gap_ms(log, s["began_s"], s["ended_s"]) for s in moved), default=0.0),
        "p50_ms": float(np.percentile([r["latency_ms"] for r in log], 50)),
        "p99_ms": float(np.percentile([r["latency_ms"] for r in log], 99)),
        "share_changes": len(moved), "share_changes_failed": len(switches) - len(moved),
        "switch_s_mean": float(np.mean([s["total_s"] for s in moved])) if moved else None,
        "switch_s_max": max((s["total_s"] for s in moved), default=None),
        "warm_s_mean": float(np.mean([s["warm_s"] for s in moved])) if moved else None,
        "planner_decision_ms": view["last_decision_ms"], "cameras": args.cameras, "fps_per_camera": args.fps,
        "transport": args.transport,
        "seconds": time.perf_counter() - started,
    }
    rows = [{k: s[k] for k in ("kind", "old_share", "new_share", "ok", "warm_s", "drain_s", "total_s")} for s in switches]
    print_table(rows, ["kind", "old_share", "new_share", "ok", "warm_s", "drain_s", "total_s"],
                title=f"make-before-break share changes under {args.transport} traffic")
    print(f"\nrequests {summary['requests']}, failed {summary['failed_requests']} (goal 0), max gap "
          f"{summary['max_gap_ms']:.0f} ms, planner decision {summary['planner_decision_ms']:.1f} ms, "
          f"{summary['seconds']:.1f} s in all")
    out = save_results({**summary, "switches": switches}, args.out, rows=rows)
    _plot(log, switches, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

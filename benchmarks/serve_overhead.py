"""What the HTTP layer costs: frames/s through the StemExecutor with and without Serve in front.

In one run, on one local Ray instance, with 8 concurrent loopback cameras (closed loop: each
sends its next request when the previous answer arrives) and the same JPEG frames (synthetic
world, 128x128):

(a) direct      - the cameras call the StemExecutor actor themselves (decoded frames, 8 per call;
                  also 1 per call for reference): the ceiling without HTTP.
(b) http        - one JPEG per `POST /cameras/{id}/frames` through the Serve ingress.
(c) http_batch  - 8 JPEGs per `POST /cameras/{id}/frames:batch` (multipart).
(d) echo        - an empty Serve deployment that reads the same JPEG body and answers: the
                  per-request ceiling of Serve itself on this machine.
(e) http and echo again behind Serve's HAProxy ingress (`http.ingress: haproxy`; a second local Ray
    started with RAY_SERVE_ENABLE_HA_PROXY=1): `fps_http_haproxy`, `rps_echo_haproxy` and their ratio
    (goal >= 0.5: what is left once the proxy is fast is Stemcell's own Python work per frame).

Ratios: http / echo (goal >= 0.8: the app adds little to Serve's own per-request cost) and
http_batch / direct (goal >= 0.7: with batching, HTTP costs little next to the model).
The load generator runs in this process on the same cores as the server, in every mode alike.

    python benchmarks/serve_overhead.py --quick --out out/serve_overhead.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import ray
import yaml
from ray import serve
from starlette.requests import Request

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.imaging import decode_image, encode_jpeg
from stemcell.models import build_base
from stemcell.serve_config import ExecutorSection
from stemcell.package.build import TrainingInfo, app_entry, build_package, synthetic_data_entry
from stemcell.training import CandidateSpec, finetune_candidate, profile_latency, world_frames
from stemcell.world import CLASSES, World, WorldConfig

CAMERAS = 8
BATCH = 8
TOKEN_ENV = "STEMCELL_BENCH_ADMIN_TOKEN"


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Echo:
    """Reads the body and answers: Serve's own per-request cost, nothing else."""

    async def __call__(self, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}


def _speed_package(root: Path) -> Path:
    """A small real M-Package (tiny_cnn, 64x64, apps car + person at 2 branchpoints, 1 epoch each).

    Throughput is what is measured here, so the candidates are trained just enough to be real.
    """
    world = World(WorldConfig(seed=0, num_cameras=2, height=64, width=64, duration_s=120.0))
    train, val = world_frames(world, [0, 1], 64, val_fraction=0.3)
    base = build_base("tiny_cnn")
    apps = {"car": CLASSES.index("car"), "person": CLASSES.index("person")}
    results = [finetune_candidate(base, CandidateSpec(app, (k,), b, epochs=1, lr=1e-3, batch_size=32, input_size=64), train, val)
               for app, k in apps.items() for b in (3, base.num_segments)]
    entries = [app_entry(app, [app], val.presence[:, k]) for app, k in apps.items()]
    info = TrainingInfo(input_size=64, fps=world.config.fps, data=synthetic_data_entry(),
                        world={"seed": 0, "num_cameras": 2, "height": 64, "width": 64})
    build_package(root, base, info, profile_latency(base, 64, batch_sizes=(1, 8), repeats=2), entries, results)
    return root


def _jpegs(frames_per_camera: int) -> list[list[bytes]]:
    world = World(WorldConfig(seed=0, num_cameras=CAMERAS, height=128, width=128, duration_s=60.0))
    return [[encode_jpeg(world.camera(c).frame(i * 7)) for i in range(frames_per_camera)] for c in range(CAMERAS)]


async def _closed_loop(send: Callable[[int, int], Awaitable[int]], warmup_s: float, measure_s: float) -> dict:
    """CAMERAS loops, each awaiting `send(camera, i) -> frames` back to back; counts the measured window."""
    latencies: list[float] = []
    frames = 0
    cpu: dict[str, float] = {}
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup_s, t_start + warmup_s + measure_s

    async def camera(c: int) -> None:
        nonlocal frames
        i = 0
        while (now := time.perf_counter()) < t_end:
            n = await send(c, i)
            done = time.perf_counter()
            if now >= t_measure and done <= t_end:
                frames += n
                latencies.append((done - now) * 1000.0)
            i += 1

    async def account() -> None:  # CPU over exactly the measured window
        await asyncio.sleep(warmup_s)
        before = cpu_by_component()
        await asyncio.sleep(measure_s)
        cpu.update({k: v - before[k] for k, v in cpu_by_component().items()})

    await asyncio.gather(account(), *(camera(c) for c in range(CAMERAS)))
    per_request = {f"cpu_ms_{k}": 1e3 * v / max(len(latencies), 1) for k, v in cpu.items()}  # per request
    return {"fps": frames / measure_s, "rps": len(latencies) / measure_s, "latencies_ms": latencies, **per_request}


def _summarise(windows: list[dict]) -> dict:
    """Median throughput over the rounds (robust to load drifting during the run); latency over all requests."""
    lat = np.concatenate([w["latencies_ms"] for w in windows]) if windows else np.array([np.nan])
    cpu = {k: float(np.median([w[k] for w in windows])) for k in windows[0] if k.startswith("cpu_ms_")}
    return {"fps": float(np.median([w["fps"] for w in windows])), "rps": float(np.median([w["rps"] for w in windows])),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "requests": int(lat.size), "rounds": len(windows), **cpu,
            "cpu_ms_server": sum(cpu[f"cpu_ms_{k}"] for k in ("proxy", "replica", "executor")),
            "cpu_ms_total": sum(cpu.values())}


COMPONENTS = (("ProxyActor", "proxy"), ("StemcellIngress", "replica"), (":Echo", "replica"),
              ("StemExecutor", "executor"))


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, title, CPU seconds) from /proc (Linux); empty elsewhere."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), title, (int(fields[11]) + int(fields[12])) / tick)
    return table


def cpu_by_component() -> dict[str, float]:
    """CPU seconds used so far by this Ray session's processes, by role (this process = client).

    Only descendants of this process count (the local Ray started here), so other Ray sessions on
    the machine are not mixed in.  CPU time, unlike wall time, is little affected by other load.
    """
    table = _process_table()
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    totals = {"client": table.get(me, (0, "", 0.0))[2], "proxy": 0.0, "replica": 0.0, "executor": 0.0, "other": 0.0}
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        title = table[pid][1]
        role = next((r for key, r in COMPONENTS if key in title), "other")
        totals[role] += table[pid][2]
    return totals


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: HTTP {response.status_code} {response.text[:200]}")


async def _run_modes(url: str, tokens: list[str], jpegs: list[list[bytes]], rounds: int, warmup_s: float,
                     measure_s: float, namespace: str, only: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Every mode (or those in `only`) once per round, the order rotated each round, so load changes hit all
    modes alike."""
    executor = ray.get_actor("stemcell-executor-0", namespace=namespace)
    arrays = [[decode_image(j, "image/jpeg") for j in cam] for cam in jpegs]
    n = len(jpegs[0])
    limits = httpx.Limits(max_connections=2 * CAMERAS, max_keepalive_connections=2 * CAMERAS)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        headers = [{"Authorization": f"Bearer {t}"} for t in tokens]

        async def direct(c: int, i: int, size: int) -> int:
            frames = np.stack([arrays[c][(i * size + k) % n] for k in range(size)])
            await executor.infer.remote(f"bench-{c}", frames)
            return size

        async def single(c: int, i: int) -> int:
            r = await http.post(f"/cameras/bench-{c}/frames", content=jpegs[c][i % n],
                                headers={**headers[c], "Content-Type": "image/jpeg"})
            _check(r)
            return 1

        async def batch(c: int, i: int) -> int:
            files = [("frames", (f"{k}.jpg", jpegs[c][(i * BATCH + k) % n], "image/jpeg")) for k in range(BATCH)]
            r = await http.post(f"/cameras/bench-{c}/frames:batch", files=files, headers=headers[c])
            _check(r)
            return BATCH

        async def echo(c: int, i: int) -> int:
            r = await http.post("/echo", content=jpegs[c][i % n], headers={"Content-Type": "image/jpeg"})
            _check(r)
            return 1

        modes: dict[str, Callable[[int, int], Awaitable[int]]] = {
            "direct": lambda c, i: direct(c, i, BATCH),
            "direct_single": lambda c, i: direct(c, i, 1),
            "http": single, "http_batch": batch, "echo": echo,
        }
        windows: dict[str, list[dict]] = {name: [] for name in modes if only is None or name in only}
        names = [name for name in modes if only is None or name in only]
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                w = await _closed_loop(modes[name], warmup_s, measure_s)
                windows[name].append(w)
                print(f"  round {r + 1}/{rounds} {name:14s} {w['fps']:8.1f} frames/s  {w['rps']:7.1f} req/s", flush=True)
    return {name: _summarise(w) for name, w in windows.items()}


def _deploy(root: Path, package: Path, coalesce_ms: float) -> tuple[str, list[str]]:
    # benchmarks/ is on sys.path when run as a script
    from ports import reserved_port, wait_listening

    from app.serve_app import build_app
    from stemcell.client import Admin

    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "package_dir": str(package), "state_path": str(root / "state.db"), "admin_token_env": TOKEN_ENV,
        "app_name": "stemcell-bench", "ingress": {"num_cpus": 0.5},
        "executors": {"num_cpus": 1, "namespace": "stemcell-bench", "max_wait_ms": 2, "coalesce_ms": coalesce_ms},
    }))
    os.environ[TOKEN_ENV] = secrets.token_urlsafe(32)
    with reserved_port() as port:  # held until Serve's proxy listens there (see benchmarks/ports.py)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config_path": str(config)}), name="stemcell-bench", route_prefix="/")
        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
        wait_listening(port)
    url = f"http://127.0.0.1:{port}"
    with Admin(url, os.environ[TOKEN_ENV], timeout=120.0) as admin:
        apps = [a["name"] for a in json.loads((package / "manifest.json").read_text())["apps"]]
        tokens = [admin.add_camera(f"bench-{c}", apps, fps=30)["token"] for c in range(CAMERAS)]
    return url, tokens


def measure_behind_haproxy(package: Path, root: Path, jpegs: list[list[bytes]], rounds: int, warmup_s: float,
                           measure_s: float, coalesce_ms: float) -> dict[str, float]:
    """(e): single frames and the echo behind Serve's HAProxy ingress, on a fresh local Ray whose processes
    all inherit the flag (as `stemcell serve` with `http.ingress: haproxy` starts one)."""
    from ports import haproxy_env  # benchmarks/ is on sys.path when run as a script

    env = haproxy_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    root.mkdir(parents=True, exist_ok=True)  # its own serve.yaml and state
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        url, tokens = _deploy(root, package, coalesce_ms)
        results = asyncio.run(_run_modes(url, tokens, jpegs, rounds, warmup_s, measure_s, "stemcell-bench",
                                         only=("http", "echo")))
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"fps_http_haproxy": results["http"]["fps"], "rps_echo_haproxy": results["echo"]["rps"],
            "p99_ms_http_haproxy": results["http"]["p99_ms"],
            "ratio_http_haproxy_to_echo_haproxy": results["http"]["rps"] / results["echo"]["rps"]}


def _plot(results: dict[str, dict], summary: dict, path: Path) -> None:
    names = list(results)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(names, [results[n]["fps"] for n in names], color=["#4c72b0", "#8fa8d0", "#dd8452", "#c44e52", "#999999"])
    for bar, n in zip(bars, names):
        ax.annotate(f"{results[n]['fps']:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("frames/s (echo: requests/s)")
    ax.set_title(f"{CAMERAS} cameras: http/echo = {summary['ratio_http_to_echo']:.2f} (goal 0.8), "
                 f"batch/direct = {summary['ratio_http_batch_to_direct']:.2f} (goal 0.7)", fontsize=9)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows (< 60 s in all on 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--package", type=Path, help="M-Package to serve (default: build a tiny one in a temp dir)")
    parser.add_argument("--seconds", type=float, help="measured window per mode and round (default 2 quick, 5 full)")
    parser.add_argument("--coalesce-ms", type=float, default=ExecutorSection().coalesce_ms,
                        help="executors.coalesce_ms of the served app (default: the config default)")
    parser.add_argument("--rounds", type=int, help="rounds over all modes (default 1 quick, 5 full)")
    args = parser.parse_args()
    measure_s = args.seconds or (2.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 5)
    warmup_s = 0.5 if args.quick else 1.0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stemcell-bench-") as tmp:
        root = Path(tmp)
        package = args.package or _speed_package(root / "pkg")
        jpegs = _jpegs(16)
        print(f"package and frames ready after {time.perf_counter() - started:.1f} s", flush=True)
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            url, tokens = _deploy(root, package, args.coalesce_ms)
            print(f"serving after {time.perf_counter() - started:.1f} s", flush=True)
            results = asyncio.run(_run_modes(url, tokens, jpegs, rounds, warmup_s, measure_s, "stemcell-bench"))
        finally:
            ray.shutdown()  # takes Serve down with it, without waiting for graceful replica shutdown
        haproxy = measure_behind_haproxy(package, root / "haproxy", jpegs, rounds, warmup_s, measure_s, args.coalesce_ms)

    summary = {
        "fps_direct": results["direct"]["fps"],
        "fps_direct_single": results["direct_single"]["fps"],
        "fps_http": results["http"]["fps"],
        "fps_http_batch": results["http_batch"]["fps"],
        "rps_echo": results["echo"]["rps"],
        "ratio_http_to_echo": results["http"]["rps"] / results["echo"]["rps"],
        "ratio_http_batch_to_direct": results["http_batch"]["fps"] / results["direct"]["fps"],
        "p99_ms_http": results["http"]["p99_ms"],
        # The same ratios from CPU time per frame (all processes of the session): what a CPU-bound
        # server keeps, and much less sensitive than throughput to other load on the machine.
        "cpu_ratio_http_to_echo": results["echo"]["cpu_ms_total"] / results["http"]["cpu_ms_total"],
        "cpu_ratio_http_batch_to_direct": results["direct"]["cpu_ms_total"] / results["http_batch"]["cpu_ms_total"],
        "cameras": CAMERAS, "batch": BATCH, "rounds": rounds, "measure_s": measure_s, "coalesce_ms": args.coalesce_ms,
        "jpeg_bytes_mean": float(np.mean([len(j) for c in jpegs for j in c])),
        **haproxy,
    }
    rows = [{"mode": name, "frames_per_request": BATCH if name in ("direct", "http_batch") else 1, **r}
            for name, r in results.items()]
    print_table(rows, ["mode", "frames_per_request", "fps", "rps", "p50_ms", "p99_ms", "cpu_ms_proxy", "cpu_ms_replica",
                       "cpu_ms_executor", "cpu_ms_server", "cpu_ms_client"],
                title=f"Serve overhead, {CAMERAS} concurrent cameras, median of {rounds} rounds x {measure_s:g} s")
    print(f"\nhttp / echo = {summary['ratio_http_to_echo']:.2f} (goal >= 0.8; by CPU time "
          f"{summary['cpu_ratio_http_to_echo']:.2f}); http_batch / direct = {summary['ratio_http_batch_to_direct']:.2f} "
          f"(goal >= 0.7; by CPU time {summary['cpu_ratio_http_batch_to_direct']:.2f}); "
          f"p99 http = {summary['p99_ms_http']:.1f} ms")
    print(f"behind HAProxy: http {summary['fps_http_haproxy']:.1f} frames/s, echo {summary['rps_echo_haproxy']:.1f} req/s, "
          f"http / echo = {summary['ratio_http_haproxy_to_echo_haproxy']:.2f} (goal >= 0.5)")
    out = save_results({**summary, "rows": rows}, args.out, rows=rows)
    _plot(results, summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

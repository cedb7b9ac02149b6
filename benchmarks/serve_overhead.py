"""What the HTTP layer costs: frames/s through the StemExecutor with and without Serve in front.

In one run, on one local Ray instance, with 8 concurrent loopback cameras (closed loop: each
sends its next request when the previous answer arrives) and the same JPEG frames (the synthetic
world at `--resolution`: 128x128, or scaled up to 720p / 1080p):

(a) direct      - the cameras call the StemExecutor actor themselves (decoded frames, 8 per call;
                  also 1 per call for reference): the ceiling without HTTP.
(b) http        - one JPEG per `POST /cameras/{id}/frames` through the Serve ingress.
(c) http_batch  - 8 JPEGs per `POST /cameras/{id}/frames:batch` (multipart); `http_batch_octet` the same
                  frames as one `application/octet-stream` body (`stemcell.frame_stream`:
                  length-prefixed images), the format every other batch mode below sends.
(d) echo        - an empty Serve deployment that reads the same JPEG body and answers: the
                  per-request ceiling of Serve itself on this machine.

Ratios: http / echo (goal >= 0.8: the app adds little to Serve's own per-request cost) and
http_batch / direct (goal >= 0.7: with batching, HTTP costs little next to the model).

At camera resolutions, side by side in the same run (one function per measurement below):
- `fps_http_720`, `fps_http_1080`: (b) with 720p / 1080p JPEGs (the ingress decodes at the DCT
  scale of the model input and sends model-size arrays);
- `decode_limit_fps_1080`: what libjpeg-turbo alone decodes and resizes per second (this process,
  one thread per core the Ray session has): the physical limit of the push path here, and
  `ratio_http_to_decode_limit_1080` (goal >= 0.6);
- `executor_fps_1080_full` vs `executor_fps_1080_model_size`: the executor called directly with
  decoded 1080p frames (it resizes them) vs with model-size arrays (what the ingress sends);
- `fps_http_10apps` vs `fps_peer_plain_serve_10models`: every frame answered by 10 apps over HTTP,
  vs plain Ray Serve running 10 separate models of the same base with `@serve.batch`
  (`plain_serve.py`), same cameras and JPEGs, interleaved rounds: `ratio_to_plain_serve`.
- `fps_http_batch_1080`: (c) with 1080p JPEGs, 8 per request (a camera gateway that batches), and
  `ratio_http_batch_to_decode_limit_1080`;
- `fps_http_haproxy`, `rps_echo_haproxy`: (b) and (d) again behind Serve's HAProxy ingress
  (`http.ingress: haproxy`, the default; a second local Ray started with RAY_SERVE_ENABLE_HA_PROXY=1
  in a side process, `serve_haproxy.py`, measured after the first Ray is shut down), and
  `ratio_http_haproxy_to_echo_haproxy` (goal >= 0.5: what is left once the proxy is fast is
  Stemcell's own Python work per frame); behind it too, `fps_http_batch_haproxy`
  (`ratio_http_batch_haproxy_to_direct`), and at 1080p `fps_http_1080_haproxy`
  (`ratio_http_haproxy_to_decode_limit_1080`) and `fps_http_batch_1080_haproxy`
  (`ratio_http_batch_haproxy_to_decode_limit_1080`): what users of the default ingress get.
The load generator runs in this process on the same cores as the server, in every mode alike;
the machine is shared, so the CPU-time ratios are the steadier figures. Each start-up and measurement
phase's wall time is printed as it ends and saved as `phase_s` (`seconds_total` includes the imports);
`--cache DIR` trains the package once and reuses it.

    python benchmarks/serve_overhead.py --quick --cache /tmp/stemcell-bench-cache --out out/serve_overhead.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.imaging import decode_for_model, decode_image
from stemcell.models import build_base
from stemcell.package import load_package
from stemcell.package.build import TrainingInfo, app_entry, build_package, synthetic_data_entry
from stemcell.serve_config import ExecutorSection
from stemcell.training import CandidateSpec, finetune_candidate, profile_latency, world_frames
from stemcell.world import CLASSES, World, WorldConfig

from serve_bench import BATCH, CAMERAS, Bench, bench, deploy, http_client  # benchmarks/ is on sys.path
from procstat import process_age_s
from serve_haproxy import HaproxySide
from serve_load import Phases, camera_jpegs

TENANTS = 10  # apps per frame in the 10-apps comparison


def _speed_package(root: Path, tenants: int = 2, base_name: str = "tiny_cnn", world_s: float = 120.0,
                   input_size: int = 64) -> Path:
    """A small real M-Package (`base_name` at `input_size` px, the world rendered at that size; apps car +
    person at 2 branchpoints, 1 epoch each).

    With `tenants` > 2, more apps (the world's classes again, other seeds) with only their head
    above the shared base: `tenants` apps of one base, as many tenants would bring. Throughput is
    what is measured here, so the candidates are trained just enough to be real (on `world_s`
    seconds of two cameras: `--quick` trains on a third of it, the models' size is the same).
    """
    world = World(WorldConfig(seed=0, num_cameras=2, height=input_size, width=input_size, duration_s=world_s))
    train, val = world_frames(world, [0, 1], input_size, val_fraction=0.3)
    base = build_base(base_name)
    apps = {name: (CLASSES.index(name), (3, base.num_segments)) for name in ("car", "person")}
    for t in range(2, tenants):
        apps[f"tenant-{t}"] = (t % len(CLASSES), (base.num_segments,))
    results = [finetune_candidate(base, CandidateSpec(app, (k,), b, epochs=1, lr=1e-3, batch_size=32,
                                                      input_size=input_size, seed=i), train, val)
               for i, (app, (k, branchpoints)) in enumerate(apps.items()) for b in branchpoints]
    entries = [app_entry(app, [CLASSES[k]], val.presence[:, k]) for app, (k, _) in apps.items()]
    info = TrainingInfo(input_size=input_size, fps=world.config.fps, data=synthetic_data_entry(),
                        world={"seed": 0, "num_cameras": 2, "height": input_size, "width": input_size})
    build_package(root, base, info, profile_latency(base, input_size, batch_sizes=(1, 8), repeats=2), entries, results)
    return root


def _package_path(args: argparse.Namespace, root: Path) -> tuple[Path, bool]:
    """(the package to serve, whether it must be trained first): `--package` as given; with `--cache` a
    folder named by what shapes the package (base, apps, training seconds), reused once built."""
    if args.package is not None:
        return args.package, False
    if args.cache is None:
        return root / "pkg", True
    package = args.cache / f"serve-overhead-{args.base}-{TENANTS}apps-{40 if args.quick else 120}s"
    return package, not (package / "manifest.json").is_file()


def _build_cached(package: Path, base_name: str, world_s: float) -> None:
    """Train the package into a sibling folder and rename it into place: an interrupted run leaves no
    half-written package for the next one to reuse."""
    partial = package.with_name(f"{package.name}.partial-{os.getpid()}")
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    _speed_package(partial, tenants=TENANTS, base_name=base_name, world_s=world_s)
    shutil.rmtree(package, ignore_errors=True)
    partial.rename(package)


async def measure_overhead(b: Bench, jpegs: list[list[bytes]]) -> dict[str, dict]:
    """(a)-(d) at `--resolution`: the keys this benchmark always had."""
    arrays = [[decode_for_model(j, "image/jpeg", b.input_size) for j in cam] for cam in jpegs]
    return await b.rounds_of({"direct": b.direct(arrays, "bench", BATCH), "direct_single": b.direct(arrays, "bench", 1),
                              "http": b.single(jpegs, "bench"), "http_batch": b.batch(jpegs, "bench"),
                              "http_batch_octet": b.batch(jpegs, "bench", stream=True),
                              "echo": b.single(jpegs, "bench", "/echo")})


async def measure_http_resolutions(b: Bench, by_resolution: dict[int, list[list[bytes]]]) -> dict[str, dict]:
    """(b) with 720p and 1080p JPEGs, and (c) with 1080p JPEGs (a camera gateway that batches)."""
    return await b.rounds_of({**{f"http_{res}": b.single(by_resolution[res], "bench") for res in (720, 1080)},
                              "http_batch_1080": b.batch(by_resolution[1080], "bench", stream=True)})


def measure_decode_limit(jpegs: list[list[bytes]], size: int, threads: int, seconds: float) -> dict[str, float]:
    """JPEG -> model-size frames per second with libjpeg-turbo (DCT-scaled decode + the one resize)
    on `threads` threads, nothing else: simplejpeg and torch release the GIL, so threads use the cores."""
    flat = [j for cam in jpegs for j in cam]
    deadline = time.perf_counter() + seconds

    def work(k: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            decode_for_model(flat[(k + done) % len(flat)], "image/jpeg", size)
            done += 1
        return done

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        frames = sum(pool.map(work, range(threads)))
    fps = frames / (time.perf_counter() - started)
    return {"fps": fps, "rps": fps, "threads": threads, "cpu_ms_total": 1e3 * (time.process_time() - cpu) / frames}


async def measure_executor_1080(b: Bench, jpegs: list[list[bytes]]) -> dict[str, dict]:
    """The executor fed decoded 1080p frames (resized inside it) vs the model-size arrays of the same JPEGs."""
    full = [[decode_image(j, "image/jpeg") for j in cam] for cam in jpegs]
    small = [[decode_for_model(j, "image/jpeg", b.input_size) for j in cam] for cam in jpegs]
    return await b.rounds_of({"executor_1080_full": b.direct(full, "bench", BATCH, preput=True),
                              "executor_1080_model_size": b.direct(small, "bench", BATCH, preput=True)})


async def measure_ten_apps(b: Bench, jpegs: list[list[bytes]], rounds: int) -> dict[str, dict]:
    """10 apps per frame: Stemcell over HTTP vs plain Serve's 10 separate models, interleaved rounds."""
    interleaved = Bench(b.http, b.executor, b.tokens, b.input_size, rounds, b.warmup_s, b.measure_s)
    return await interleaved.rounds_of({"http_10apps": b.single(jpegs, "ten"),
                                        "peer_plain_serve_10models": b.single(jpegs, "ten", "/plain")})


def _plot(results: dict[str, dict], summary: dict, path: Path) -> None:
    names = list(results)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    bars = ax.bar(names, [results[n]["fps"] for n in names], color="#4c72b0")
    for bar, n in zip(bars, names):
        ax.annotate(f"{results[n]['fps']:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_ylabel("frames/s (echo: requests/s)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_title(f"{CAMERAS} cameras: http/echo = {summary['ratio_http_to_echo']:.2f} (goal 0.8), "
                 f"batch/direct = {summary['ratio_http_batch_to_direct']:.2f} (goal 0.7), "
                 f"http/decode limit 1080p = {summary['ratio_http_to_decode_limit_1080']:.2f} (goal 0.6), "
                 f"10 apps vs plain Serve = {summary['ratio_to_plain_serve']:.1f}x", fontsize=8)
    save_plot(fig, path)


def _cpu_bounds(results: dict[str, dict]) -> dict[str, float]:
    """The best each ratio could be by CPU time if Stemcell's ingress replica cost no more than the empty
    echo's, i.e. with only the executor's (and for batches Serve's per-request) CPU added: where a goal
    is out of reach on a CPU-bound box whatever the ingress does (README, "What HTTP costs")."""
    def bound(echo: str, http: str) -> float:
        return results[echo]["cpu_ms_total"] / (results[echo]["cpu_ms_total"] + results[http]["cpu_ms_executor"])

    direct = results["direct"]["cpu_ms_total"]  # per call of BATCH frames, as one frames:batch request
    return {"cpu_bound_http_to_echo": bound("echo", "http"),
            "cpu_bound_http_haproxy_to_echo_haproxy": bound("echo_haproxy", "http_haproxy"),
            "cpu_bound_http_batch_to_direct": direct / (direct + results["echo"]["cpu_ms_server"])}


def _summary(results: dict[str, dict], args: argparse.Namespace, rounds: int, measure_s: float) -> dict:
    decode_limit = results["decode_limit_1080"]["fps"]
    return {
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
        "fps_http_720": results["http_720"]["fps"],
        "fps_http_1080": results["http_1080"]["fps"],
        "decode_limit_fps_1080": results["decode_limit_1080"]["fps"],
        "ratio_http_to_decode_limit_1080": results["http_1080"]["fps"] / results["decode_limit_1080"]["fps"],
        "executor_fps_1080_full": results["executor_1080_full"]["fps"],
        "executor_fps_1080_model_size": results["executor_1080_model_size"]["fps"],
        "fps_http_10apps": results["http_10apps"]["fps"],
        "fps_peer_plain_serve_10models": results["peer_plain_serve_10models"]["fps"],
        "ratio_to_plain_serve": results["http_10apps"]["fps"] / results["peer_plain_serve_10models"]["fps"],
        "cpu_ratio_to_plain_serve": (results["peer_plain_serve_10models"]["cpu_ms_total"]
                                     / results["http_10apps"]["cpu_ms_total"]),
        "fps_http_batch_octet": results["http_batch_octet"]["fps"],
        "ratio_http_batch_octet_to_direct": results["http_batch_octet"]["fps"] / results["direct"]["fps"],
        "cpu_ratio_http_batch_octet_to_direct": (results["direct"]["cpu_ms_total"]
                                                 / results["http_batch_octet"]["cpu_ms_total"]),
        "fps_http_batch_1080": results["http_batch_1080"]["fps"],
        "ratio_http_batch_to_decode_limit_1080": results["http_batch_1080"]["fps"] / decode_limit,
        "fps_http_haproxy": results["http_haproxy"]["fps"],
        "fps_http_1080_haproxy": results["http_1080_haproxy"]["fps"],
        "ratio_http_haproxy_to_decode_limit_1080": results["http_1080_haproxy"]["fps"] / decode_limit,
        "fps_http_batch_1080_haproxy": results["http_batch_1080_haproxy"]["fps"],
        "ratio_http_batch_haproxy_to_decode_limit_1080": results["http_batch_1080_haproxy"]["fps"] / decode_limit,
        "fps_http_batch_haproxy": results["http_batch_haproxy"]["fps"],
        "ratio_http_batch_haproxy_to_direct": results["http_batch_haproxy"]["fps"] / results["direct"]["fps"],
        "rps_echo_haproxy": results["echo_haproxy"]["rps"],
        "ratio_http_haproxy_to_echo_haproxy": results["http_haproxy"]["rps"] / results["echo_haproxy"]["rps"],
        "cpu_ratio_http_haproxy_to_echo_haproxy": (results["echo_haproxy"]["cpu_ms_total"]
                                                   / results["http_haproxy"]["cpu_ms_total"]),
        "cpu_ratio_http_to_decode_limit_1080": (results["decode_limit_1080"]["cpu_ms_total"]
                                                / results["http_1080"]["cpu_ms_total"]),
        "cpu_ratio_http_haproxy_to_decode_limit_1080": (results["decode_limit_1080"]["cpu_ms_total"]
                                                        / results["http_1080_haproxy"]["cpu_ms_total"]),
        "cpu_ratio_http_batch_haproxy_to_decode_limit_1080": (BATCH * results["decode_limit_1080"]["cpu_ms_total"]
                                                              / results["http_batch_1080_haproxy"]["cpu_ms_total"]),
        "cpu_ratio_http_batch_haproxy_to_direct": (results["direct"]["cpu_ms_total"]
                                                   / results["http_batch_haproxy"]["cpu_ms_total"]),
        **_cpu_bounds(results),
        "resolution": args.resolution,
        "base": load_package(args.package).manifest.base.name if args.package else args.base,
        "cameras": CAMERAS, "batch": BATCH, "apps_10apps": TENANTS, "rounds": rounds,
        "measure_s": measure_s, "coalesce_ms": args.coalesce_ms,
    }


async def _measure(url: str, tokens: dict[str, str], package: Path, args: argparse.Namespace, rounds: int,
                   warmup_s: float, measure_s: float, decode_threads: int, phases: Phases) -> dict[str, dict]:
    """Every measurement, one after another, on the same deployment."""
    per_camera = {128: 16, 720: 4, 1080: 4}
    jpegs = {res: camera_jpegs(CAMERAS, per_camera[res], res) for res in {args.resolution, 720, 1080}}
    phases.done("render_jpegs")
    async with http_client(url) as http:
        b = bench(http, tokens, package, rounds, warmup_s, measure_s)
        results = await measure_overhead(b, jpegs[args.resolution])
        results |= await measure_http_resolutions(b, jpegs)
        phases.done("measure_proxy")
        results["decode_limit_1080"] = measure_decode_limit(jpegs[1080], b.input_size, decode_threads, measure_s)
        print(f"  decode limit 1080p: {results['decode_limit_1080']['fps']:.1f} frames/s", flush=True)
        results |= await measure_executor_1080(b, jpegs[1080])
        phases.done("measure_decode_and_executor")
        results |= await measure_ten_apps(b, jpegs[args.resolution], max(2, rounds))
        phases.done("measure_ten_apps")
    return results


def _print(rows: list[dict], summary: dict) -> None:
    """The table of every mode and one line per goal."""
    print_table(rows, ["mode", "fps", "rps", "p50_ms", "p99_ms", "cpu_ms_proxy", "cpu_ms_replica", "cpu_ms_executor",
                       "cpu_ms_server", "cpu_ms_client", "executor_batch_frames"],
                title=f"Serve overhead, {CAMERAS} concurrent cameras, median of {summary['rounds']} rounds x "
                      f"{summary['measure_s']:g} s")
    print(f"\nhttp / echo = {summary['ratio_http_to_echo']:.2f} (goal >= 0.8; by CPU time "
          f"{summary['cpu_ratio_http_to_echo']:.2f}); http_batch / direct = {summary['ratio_http_batch_to_direct']:.2f} "
          f"(goal >= 0.7; by CPU time {summary['cpu_ratio_http_batch_to_direct']:.2f}); "
          f"p99 http = {summary['p99_ms_http']:.1f} ms")
    print(f"1080p: http {summary['fps_http_1080']:.1f} frames/s = {summary['ratio_http_to_decode_limit_1080']:.2f} of "
          f"the decode limit {summary['decode_limit_fps_1080']:.1f} (goal >= 0.6); executor fed full frames "
          f"{summary['executor_fps_1080_full']:.1f} vs model-size {summary['executor_fps_1080_model_size']:.1f}")
    print(f"octet-stream batches: {summary['fps_http_batch_octet']:.1f} frames/s = "
          f"{summary['ratio_http_batch_octet_to_direct']:.2f} of direct (by CPU time "
          f"{summary['cpu_ratio_http_batch_octet_to_direct']:.2f}) vs multipart {summary['fps_http_batch']:.1f}")
    print(f"1080p batches of {BATCH}: {summary['fps_http_batch_1080']:.1f} frames/s = "
          f"{summary['ratio_http_batch_to_decode_limit_1080']:.2f} of the decode limit")
    print(f"behind HAProxy: http {summary['fps_http_haproxy']:.1f} frames/s, echo {summary['rps_echo_haproxy']:.1f} "
          f"req/s, http / echo = {summary['ratio_http_haproxy_to_echo_haproxy']:.2f} (goal >= 0.5); batch / direct "
          f"{summary['ratio_http_batch_haproxy_to_direct']:.2f} (by CPU time "
          f"{summary['cpu_ratio_http_batch_haproxy_to_direct']:.2f})")
    print(f"behind HAProxy at 1080p: http {summary['fps_http_1080_haproxy']:.1f} frames/s = "
          f"{summary['ratio_http_haproxy_to_decode_limit_1080']:.2f} of the decode limit (by CPU time "
          f"{summary['cpu_ratio_http_haproxy_to_decode_limit_1080']:.2f}), batches of {BATCH} "
          f"{summary['fps_http_batch_1080_haproxy']:.1f} frames/s = "
          f"{summary['ratio_http_batch_haproxy_to_decode_limit_1080']:.2f} (by CPU time "
          f"{summary['cpu_ratio_http_batch_haproxy_to_decode_limit_1080']:.2f})")
    print(f"CPU time: http / echo {summary['cpu_ratio_http_to_echo']:.2f} (at best "
          f"{summary['cpu_bound_http_to_echo']:.2f} with an ingress as cheap as the echo), behind HAProxy "
          f"{summary['cpu_ratio_http_haproxy_to_echo_haproxy']:.2f} (at best "
          f"{summary['cpu_bound_http_haproxy_to_echo_haproxy']:.2f}), batch / direct "
          f"{summary['cpu_ratio_http_batch_to_direct']:.2f} (at best {summary['cpu_bound_http_batch_to_direct']:.2f}), "
          f"1080p http / decode limit {summary['cpu_ratio_http_to_decode_limit_1080']:.2f}")
    print(f"10 apps per frame: Stemcell {summary['fps_http_10apps']:.1f} vs plain Serve "
          f"{summary['fps_peer_plain_serve_10models']:.1f} frames/s = {summary['ratio_to_plain_serve']:.2f}x "
          f"(by CPU time {summary['cpu_ratio_to_plain_serve']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows (< 90 s in all on 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--package", type=Path, help="M-Package to serve (default: build a tiny one in a temp dir)")
    parser.add_argument("--resolution", type=int, choices=(128, 720, 1080), default=128,
                        help="camera JPEGs of (a)-(d) and the 10-apps comparison (default 128: 128x128)")
    parser.add_argument("--base", default="tiny_cnn",
                        help="base of the package built when no --package is given (default tiny_cnn; "
                        "mobilenet_v3_small makes the 10-apps comparison about models rather than HTTP)")
    parser.add_argument("--seconds", type=float, help="measured window per mode and round (default 1.2 quick, 5 full)")
    parser.add_argument("--coalesce-ms", type=float, default=ExecutorSection().coalesce_ms,
                        help="executors.coalesce_ms of the served app (default: the config default)")
    parser.add_argument("--rounds", type=int, help="rounds over all modes (default 1 quick, 5 full)")
    parser.add_argument("--cache", type=Path, help="train the package here once and reuse it, keyed by what shapes "
                        "it (base, apps, training seconds): the inputs only, the measurement is the same")
    args = parser.parse_args()
    measure_s = args.seconds or (1.2 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 5)
    warmup_s = 0.3 if args.quick else 1.0
    threads = 1  # the executor's (and the peer's) torch threads: one core each on this 2-core box
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    phases = Phases()
    load_at_start = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="stemcell-bench-") as tmp:
        root = Path(tmp)
        package, build = _package_path(args, root)
        # logical CPUs only: Stemcell (ingress 0.5 + executor 1), echo (0.5) and the peer (1) all fit
        ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
        phases.done("ray_start")
        # the HAProxy session starts while the package trains (one Ray start at a time: Ray gives a node
        # 30 s to come up, which two at once missed on the loaded box)
        side = HaproxySide(package, root / "haproxy", resolution=args.resolution, rounds=rounds, warmup_s=warmup_s,
                           measure_s=measure_s, coalesce_ms=args.coalesce_ms, threads=threads)
        try:
            try:
                if build:
                    _build_cached(package, args.base, 40.0 if args.quick else 120.0)
                phases.done("package_trained" if build else "package_cached")
                side.package_ready()
                url, tokens = deploy(root, package, args.coalesce_ms, threads)
                phases.done("deploy")
                side.wait_ready()  # its start-up must not overlap the measured windows
                phases.done("haproxy_side_ready")
                results = asyncio.run(_measure(url, tokens, package, args, rounds, warmup_s, measure_s,
                                               decode_threads=os.cpu_count() or 1, phases=phases))
            finally:
                ray.shutdown()  # takes Serve down with it, without waiting for graceful replica shutdown
                phases.done("ray_shutdown")
            results |= side.measure()
            phases.done("measure_haproxy")
        finally:
            side.stop()
            phases.done("haproxy_side_stop")

    rows = [{"mode": name, **{k: v for k, v in r.items() if k != "latencies_ms"}} for name, r in results.items()]
    summary = _summary(results, args, rounds, measure_s)
    _print(rows, summary)
    summary |= {"seconds_total": process_age_s(), "phase_s": phases.seconds,
                "load_average": [load_at_start, round(os.getloadavg()[0], 1)]}  # 1-min, at start and end
    print(f"load average (1 min) {load_at_start} at start, {summary['load_average'][1]} at the end")
    print(f"whole run {summary['seconds_total']:.0f} s (imports included): "
          + ", ".join(f"{k} {v:.1f}" for k, v in phases.seconds.items()))
    out = save_results({**summary, "rows": rows}, args.out, rows=rows)
    _plot(results, summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

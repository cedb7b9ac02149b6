"""Only the 10-apps comparison of `serve_overhead.py`, at the base's real input sizes, with where each frame's CPU goes.

Stemcell answering every frame with 10 apps (their stem shared) over HTTP vs the plain-Serve peer
(`plain_serve.py`: 10 separate models of the same base in one deployment, `@serve.batch`), same 8
loopback cameras and JPEGs (the synthetic world scaled up to `--resolution`, 720p by default, as
real cameras send), interleaved rounds (`serve_overhead.measure_ten_apps`); a Stemcell 503 is
honoured (the frame is sent again after a pause, counted once) since on a loaded box Stemcell's
door refuses what it cannot answer within `limits.answer_within_s`.

`--input-size` takes one or more sizes: for each, a 10-app package of `--base` built at that input
size (mobilenet_v3_small: 224 is what real cameras use; 64 is what earlier sessions measured) is
served in its own local Ray session, one after the other in this run, with the same JPEGs and
clients; each ratio compares Stemcell and the peer inside one session, rounds interleaved. Besides
the frame rates it reports CPU milliseconds per frame by process role (Serve's proxy, the ingress
or peer replica, the executor, this client), from /proc over exactly the measured windows: the CPU
ratio does not depend on how the two systems share the cores, the frame-rate ratio does.

    python benchmarks/ten_apps.py --input-size 64 224 --ingress proxy --out out/perf/ten_apps_proxy.json
    python benchmarks/ten_apps.py --input-size 64 224 --ingress haproxy --out out/perf/ten_apps_haproxy.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_overhead and its siblings
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import serve_overhead as so  # noqa: E402
from ports import haproxy_env  # noqa: E402
from serve_bench import CAMERAS, bench, deploy, http_client  # noqa: E402
from serve_load import camera_jpegs  # noqa: E402

from stemcell.eval import print_table, save_plot, save_results  # noqa: E402
from stemcell.package import PackageError, load_package  # noqa: E402
from stemcell.serve_config import ExecutorSection  # noqa: E402

ROLES = ("proxy", "replica", "executor", "client")
MODES = {"http_10apps": "Stemcell", "peer_plain_serve_10models": "plain Serve"}


def package_at(cache: Path, base: str, size: int) -> Path:
    """The 10-app package of `base` at input `size`, reused from `cache` when it loads (both ingress runs
    serve the same weights), else built there."""
    root = cache / f"pkg-{base}-{size}"
    try:
        load_package(root)
    except PackageError:
        so._speed_package(root, tenants=so.TENANTS, base_name=base, world_s=40.0, input_size=size)  # noqa: SLF001
    return root


async def _measure(url: str, tokens: dict[str, str], package: Path, jpegs: list[list[bytes]], rounds: int,
                   seconds: float) -> dict[str, dict]:
    async with http_client(url) as http:
        b = bench(http, tokens, package, rounds, 1.0, seconds)
        return await so.measure_ten_apps(b, jpegs, rounds)


def measure_size(package: Path, ingress: str, jpegs: list[list[bytes]], rounds: int,
                 seconds: float) -> dict[str, dict]:
    """Stemcell and the peer on a fresh local Ray session (behind `ingress`) and state, rounds interleaved."""
    if ingress == "haproxy":
        os.environ.update(haproxy_env())  # inherited by every process of the local Ray started next
    with tempfile.TemporaryDirectory(prefix="stemcell-ten-") as root:
        ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            url, tokens = deploy(Path(root), package, ExecutorSection().coalesce_ms, 1)
            return asyncio.run(_measure(url, tokens, package, jpegs, rounds, seconds))
        finally:
            ray.shutdown()  # takes Serve down with it


def _per_frame(r: dict, role: str) -> float:
    return r[f"cpu_ms_{role}"] * r["rps"] / max(r["fps"], 1e-9)  # closed_loop gives CPU ms per request


def _plot(rows: list[dict], summary: dict, path: Path) -> None:
    from stemcell.eval.plotting import plt

    sizes = sorted({r["input_size"] for r in rows})
    fig, (ax_fps, ax_cpu) = plt.subplots(1, 2, figsize=(11, 4))
    for i, mode in enumerate(MODES):
        mine = {r["input_size"]: r for r in rows if r["mode"] == mode}
        x = [k + (i - 0.5) * 0.4 for k in range(len(sizes))]
        ax_fps.bar(x, [mine[s]["fps"] for s in sizes], 0.4, label=MODES[mode])
        bottom = [0.0] * len(sizes)
        for role in ROLES[:3]:
            values = [mine[s][f"cpu_ms_per_frame_{role}"] for s in sizes]
            ax_cpu.bar(x, values, 0.4, bottom=bottom, label=f"{MODES[mode]}: {role}")
            bottom = [b + v for b, v in zip(bottom, values)]
    for ax, label in ((ax_fps, "frames/s (10 apps each)"), (ax_cpu, "server CPU ms per frame")):
        ax.set_xticks(range(len(sizes)), [f"{s} px\n{summary['ratios'][str(s)]:.1f}x" for s in sizes])
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax_fps.set_title(f"{summary['base']}, {summary['ingress']}, {CAMERAS} cameras, {summary['resolution']}p JPEGs")
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--base", default="mobilenet_v3_small", help="base of the 10-app packages built here")
    parser.add_argument("--input-size", type=int, nargs="+", default=[64, 224],
                        help="input size(s) the packages are built at (default 64 224)")
    parser.add_argument("--resolution", type=int, choices=(128, 720, 1080), default=720,
                        help="camera JPEGs: 128x128, or the world scaled up to 720p / 1080p (default 720)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per mode and round")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy")
    parser.add_argument("--cache", type=Path, default=Path("runs/ten_apps"),
                        help="where the packages are kept between runs (default runs/ten_apps)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    jpegs = camera_jpegs(CAMERAS, 16 if args.resolution == 128 else 4, args.resolution)
    rows, ratios, cpu_ratios, keys = [], {}, {}, {}
    for size in args.input_size:
        package = package_at(args.cache, args.base, size)
        print(f"{size} px package ready after {time.perf_counter() - started:.1f} s", flush=True)
        results = measure_size(package, args.ingress, jpegs, args.rounds, args.seconds)
        ours, peer = results["http_10apps"], results["peer_plain_serve_10models"]
        ratios[str(size)] = ours["fps"] / peer["fps"]
        server = ROLES[:3]  # the client is the same load generator for both
        cpu_ratios[str(size)] = sum(_per_frame(peer, r) for r in server) / sum(_per_frame(ours, r) for r in server)
        keys |= {f"fps_http_10apps_{size}": ours["fps"], f"fps_peer_plain_serve_10models_{size}": peer["fps"],
                 f"ratio_to_plain_serve_{size}": ratios[str(size)],
                 f"cpu_ratio_to_plain_serve_{size}": cpu_ratios[str(size)]}
        rows += [{"input_size": size, "mode": name, "fps": r["fps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                  **{f"cpu_ms_per_frame_{role}": _per_frame(r, role) for role in ROLES}}
                 for name, r in results.items()]
    summary = {"base": args.base, "ingress": args.ingress, "resolution": args.resolution, "rounds": args.rounds,
               "input_sizes": args.input_size, "ratios": ratios, "cpu_ratios": cpu_ratios,
               **keys,
               "load_before": load_before, "load_after": os.getloadavg()[0],
               "seconds_total": time.perf_counter() - started}
    print_table(rows, ["input_size", "mode", "fps", "p50_ms", "p99_ms", *(f"cpu_ms_per_frame_{r}" for r in ROLES)],
                title=f"10 apps per frame ({args.base}, {args.ingress}, {args.resolution}p JPEGs), "
                      f"median of {args.rounds} rounds")
    for size in args.input_size:
        print(f"{size} px: Stemcell / plain Serve = {ratios[str(size)]:.2f}x frames/s, "
              f"{cpu_ratios[str(size)]:.2f}x less server CPU per frame")
    print(f"load {load_before:.1f} -> {summary['load_after']:.1f}; {summary['seconds_total']:.0f} s")
    out = save_results({**summary, "rows": rows}, args.out, rows=rows)
    _plot(rows, summary, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Only the 10-apps comparison of `serve_overhead.py`, with more rounds and where each frame's CPU goes.

Stemcell answering every frame with 10 apps (their stem shared) over HTTP vs the plain-Serve peer
(`plain_serve.py`: 10 separate models of the same base in one deployment, `@serve.batch`), same 8
loopback cameras and JPEGs, interleaved rounds (`serve_overhead.Bench.rounds_of`); a 503 is
honoured (the client waits its Retry-After; no frame counted) rather than fatal, since on a loaded
box Stemcell's door refuses what it cannot answer within `limits.answer_within_s`.  Besides the
frame rates it reports CPU milliseconds per frame by process role (Serve's proxy, the ingress or
peer replica, the executor, this client), measured from /proc over exactly the measured windows:
the CPU ratio does not depend on how the two systems use the cores, the frame-rate ratio does.

    python benchmarks/ten_apps.py --base mobilenet_v3_small --rounds 3 --out out/perf/ten_apps.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # plain_serve, serve_load, serve_overhead, ports
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import ray  # noqa: E402
import serve_overhead as so  # noqa: E402
from ports import haproxy_env  # noqa: E402
from serve_load import Send, camera_jpegs  # noqa: E402

from stemcell.serve_config import ExecutorSection  # noqa: E402

ROLES = ("proxy", "replica", "executor", "client")


def _sender(http: httpx.AsyncClient, tokens: dict[str, str], jpegs: list[list[bytes]], path: str) -> Send:
    """One JPEG per POST to `path` for camera `ten-{c}`; frames answered (0 after a 503, once its Retry-After passed)."""
    async def send(c: int, i: int) -> int:
        cam = f"ten-{c}"
        r = await http.post(path.format(camera=cam), content=jpegs[c][i % len(jpegs[c])],
                            headers={"Authorization": f"Bearer {tokens[cam]}", "Content-Type": "image/jpeg"})
        if r.status_code == 503:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            return 0
        r.raise_for_status()
        return 1
    return send


async def _run(url: str, tokens: dict[str, str], size: int, rounds: int, seconds: float) -> dict[str, dict]:
    limits = httpx.Limits(max_connections=2 * so.CAMERAS, max_keepalive_connections=2 * so.CAMERAS)
    jpegs = camera_jpegs(so.CAMERAS, 16, 128)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        executor = ray.get_actor("stemcell-executor-0", namespace="stemcell-bench")
        bench = so.Bench(http, executor, tokens, size, rounds, 1.0, seconds)
        return await bench.rounds_of({"http_10apps": _sender(http, tokens, jpegs, "/cameras/{camera}/frames"),
                                      "peer_plain_serve_10models": _sender(http, tokens, jpegs, "/plain")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--base", default="mobilenet_v3_small", help="base of the 10-app package built here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per mode and round")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from stemcell.eval import print_table, save_results
    from stemcell.package import load_package

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stemcell-ten-") as tmp:
        root = Path(tmp)
        package = so._speed_package(root / "pkg", tenants=so.TENANTS, base_name=args.base)  # noqa: SLF001
        print(f"package ready after {time.perf_counter() - started:.1f} s", flush=True)
        if args.ingress == "haproxy":
            os.environ.update(haproxy_env())  # inherited by every process of the local Ray started next
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            url, tokens = so._deploy(root, package, ExecutorSection().coalesce_ms, 1)  # noqa: SLF001
            results = asyncio.run(_run(url, tokens, load_package(package).manifest.base.input_size, args.rounds,
                                       args.seconds))
        finally:
            ray.shutdown()
    ours, peer = results["http_10apps"], results["peer_plain_serve_10models"]

    def per_frame(r: dict, role: str) -> float:
        return r[f"cpu_ms_{role}"] * r["rps"] / max(r["fps"], 1e-9)  # closed_loop gives CPU ms per request

    rows = [{"mode": name, "fps": r["fps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
             **{f"cpu_ms_per_frame_{role}": per_frame(r, role) for role in ROLES}}
            for name, r in results.items()]
    summary = {"base": args.base, "ingress": args.ingress, "rounds": args.rounds,
               "fps_http_10apps": ours["fps"], "fps_peer_plain_serve_10models": peer["fps"],
               "ratio_to_plain_serve": ours["fps"] / peer["fps"],
               "cpu_ratio_to_plain_serve": sum(per_frame(peer, r) for r in ROLES[:3])
               / sum(per_frame(ours, r) for r in ROLES[:3]),
               "load_before": load_before, "load_after": os.getloadavg()[0], "seconds_total": time.perf_counter() - started}
    print_table(rows, ["mode", "fps", "p50_ms", "p99_ms", *(f"cpu_ms_per_frame_{r}" for r in ROLES)],
                title=f"10 apps per frame ({args.base}, {args.ingress}), median of {args.rounds} rounds")
    print(f"\nStemcell {ours['fps']:.1f} vs plain Serve {peer['fps']:.1f} frames/s = {summary['ratio_to_plain_serve']:.2f}x; "
          f"server CPU per frame {summary['cpu_ratio_to_plain_serve']:.2f}x less (load {load_before:.1f} -> "
          f"{summary['load_after']:.1f})")
    save_results({**summary, "rows": rows}, args.out, rows=rows)


if __name__ == "__main__":
    main()

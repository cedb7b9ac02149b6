"""Where the frame path's CPU goes (how the README's figures were found), two ways.

Default: cProfile of the ingress's own Python work for the two frame routes. The real app in this
process: `app.serve_app.api` with its middlewares, the real `StemcellIngress` constructor (a local Ray
with a real StateStore and a real StemExecutor on a tiny package), driven through httpx's in-process
ASGI transport by 8 concurrent clients.  Serve's proxy and replica wrapper are not in it, so what it
shows is what Stemcell adds per request.

`--serve`: the real thing under load. `benchmarks/serve_overhead.py`'s deployment (Serve's proxy, the
ingress replica, the executor) and its 8 closed-loop cameras; py-spy samples the replica and the
executor processes (GIL-holding stacks: the Python work that competes for the cores) for `--seconds`,
and each one's top functions by own samples and by samples under them are printed.

    PYTHONPATH=$PWD python scripts/profile_ingress.py --route frames --requests 400
    PYTHONPATH=$PWD python scripts/profile_ingress.py --serve --route batch --seconds 6
    PYTHONPATH=$PWD python scripts/profile_ingress.py --serve --haproxy --route stream --resolution 1080
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

import httpx
import ray
import yaml
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests.helpers, benchmarks
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # serve_overhead's own imports

import app.serve_app as serve_app  # noqa: E402
from benchmarks.harness import jpeg_frames  # noqa: E402
from stemcell.frame_stream import MEDIA_TYPE as FRAME_STREAM  # noqa: E402
from stemcell.frame_stream import encode_frames  # noqa: E402
from tests.helpers.builders import tiny_package  # noqa: E402

ADMIN = "profile-admin-" + "x" * 20
OURS = ("app/", "stemcell/", "actors/")  # py-spy's file names of this repository's modules
CLIENTS = 8


async def _ingress(root: Path) -> object:
    """A constructed StemcellIngress (the user class under Serve's wrapper), the one Serve would build."""
    tiny_package(root / "pkg", branchpoints=(0, 6), apps=("car",))
    os.environ["PROFILE_ADMIN_TOKEN"] = ADMIN
    (root / "serve.yaml").write_text(yaml.safe_dump({
        "package_dir": str(root / "pkg"), "state_path": str(root / "state.db"), "admin_token_env": "PROFILE_ADMIN_TOKEN",
        "executors": {"count": 1, "num_cpus": 1, "num_gpus": 0.25, "namespace": "profile", "max_wait_ms": 2}}))
    config = serve_app.load_serve_config(root / "serve.yaml")
    wrapper = serve_app.StemcellIngress.func_or_class  # Serve's ASGI wrapper subclass; [1] is the user class
    ingress = object.__new__(wrapper)
    await wrapper.__mro__[1].__init__(ingress, config.model_dump(mode="json"), serve_app.digest(ADMIN).hex())
    # the FastAPI routes and the frame door find "this replica" through Serve's replica context
    serve.get_replica_context = lambda: types.SimpleNamespace(servable_object=ingress)
    return ingress


async def _profile(root: Path, route: str, requests: int, top: int) -> None:
    await _ingress(root)
    jpegs = jpeg_frames(8, size=(128, 128))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=serve_app.api), base_url="http://ingress") as http:
        added = await http.post("/admin/cameras", json={"camera_id": "c0", "apps": ["car"]},
                                headers={"Authorization": f"Bearer {ADMIN}"})
        headers = {"Authorization": f"Bearer {added.json()['token']}"}

        async def one(i: int) -> int:
            if route == "frames":
                r = await http.post("/cameras/c0/frames", content=jpegs[i % 8],
                                    headers={**headers, "Content-Type": "image/jpeg"})
            elif route == "stream":
                r = await http.post("/cameras/c0/frames:batch", content=encode_frames(jpegs[:8]),
                                    headers={**headers, "Content-Type": FRAME_STREAM})
            else:
                r = await http.post("/cameras/c0/frames:batch", headers=headers,
                                    files=[("frames", (f"{k}.jpg", jpegs[k], "image/jpeg")) for k in range(8)])
            return r.status_code

        for i in range(60):  # warm-up: the executor's first batches, the token cache
            await one(i)
        profiler = cProfile.Profile()
        cpu, wall = time.process_time(), time.perf_counter()
        profiler.enable()
        statuses = [s for k in range(0, requests, CLIENTS) for s in await asyncio.gather(*(one(k + j) for j in range(CLIENTS)))]
        profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{route}: {len(statuses)} requests ({statuses.count(200)} x 200) in {wall:.1f} s; {1e3 * cpu / len(statuses):.2f} "
          "ms CPU per request in this process (the httpx client included)")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        print(out.getvalue())


def _top(collapsed: str, top: int) -> str:
    """py-spy's collapsed stacks ("f1;f2;f3 count" per line) -> the top functions by own and by total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    ours = Counter({f: n for f, n in total.items() if f.split(" (")[-1].startswith(OURS)})
    rows = [f"{samples} samples; own = the function itself, in = it and what it called"]
    rows += [f"  own {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    rows += [f"  in  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    rows += ["  Stemcell's own code:"] + [f"  in  {100 * n / samples:5.1f}%  {f}" for f, n in ours.most_common(top)]
    return "\n".join(rows)


def _serve_profile(root: Path, route: str, seconds: float, top: int, resolution: int) -> None:
    """Deploy serve_overhead's app, load it with its cameras, py-spy the replica and the executor meanwhile
    (`route` stream: frames:batch with the octet-stream body; `resolution`: the cameras' JPEGs)."""
    from serve_bench import bench, deploy, http_client
    from serve_load import camera_jpegs, closed_loop
    from serve_overhead import _speed_package

    package = _speed_package(root / "pkg", world_s=40.0)
    url, tokens = deploy(root, package, coalesce_ms=5.0, threads=1, peer=False)
    pids = {role: pid for pid, role in _serve_pids().items()}
    jpegs = camera_jpegs(8, 16 if resolution == 128 else 4, resolution)

    async def load() -> dict:
        async with http_client(url) as http:
            b = bench(http, tokens, package, 1, 1.0, seconds)
            send = b.single(jpegs, "bench") if route == "frames" else b.batch(jpegs, "bench", stream=route == "stream")
            return await closed_loop(send, 8, 1.0, seconds)

    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))  # the venv's, off PATH
    spies = {role: subprocess.Popen([spy_bin, "record", "--pid", str(pid), "--gil",
                                     "--nonblocking", "--format", "raw", "--duration", str(int(seconds) + 1),
                                     "--output", str(root / f"{role}.txt")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role, pid in pids.items()}
    before = _session_cpu()
    window = asyncio.run(load())
    after = _session_cpu()
    for spy in spies.values():
        spy.wait()
    requests = max(1.0, window["rps"] * (seconds + 1.0))  # the whole run, warm-up included
    print(f"{route}: {window['fps']:.0f} frames/s; CPU ms per request: " + ", ".join(
        f"{k[7:]} {v:.2f}" for k, v in window.items() if k.startswith("cpu_ms_")))
    used = sorted(((after[p][1] - before.get(p, (0, 0.0))[1], after[p][0]) for p in after), reverse=True)
    print("CPU ms per request by process of the session (what `other` is made of):\n" + "\n".join(
        f"  {1e3 * cpu / requests:6.2f}  {title[:90]}" for cpu, title in used[:12]))
    for role in pids:
        path = root / f"{role}.txt"
        print(f"\n== {role} (py-spy --gil) ==\n" + (_top(path.read_text(), top) if path.exists() else "no samples"))


def _session_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (title, CPU seconds) of every descendant of this process (this Ray session)."""
    from serve_load import _process_table

    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        found[pid] = (table[pid][1], table[pid][2])
    return found


def _serve_pids() -> dict[int, str]:
    """pid -> role of this session's ingress replica and executor (by process title; other people's Ray
    sessions on a shared box run processes of the same titles, so only this process's descendants)."""
    roles = {"StemcellIngress": "replica", "RoutedExecutor": "executor"}
    return {pid: role for pid, (title, _) in _session_cpu().items() for key, role in roles.items() if key in title}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=("frames", "batch", "stream"), default="frames",
                        help="one JPEG per POST, or frames:batch as multipart or as the octet-stream body")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--top", type=int, default=30, help="entries per listing")
    parser.add_argument("--serve", action="store_true", help="py-spy the real replica and executor under load")
    parser.add_argument("--seconds", type=float, default=6.0, help="--serve: sampled window")
    parser.add_argument("--resolution", type=int, choices=(128, 720, 1080), default=128, help="--serve: JPEG size")
    parser.add_argument("--haproxy", action="store_true", help="--serve: behind Serve's HAProxy ingress (the default)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.haproxy:
        from ports import haproxy_env

        os.environ.update(haproxy_env())
    ray.init(address="local", num_cpus=4 if args.serve else 2, num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="stemcell-profile-") as tmp:
            if args.serve:
                _serve_profile(Path(tmp), args.route, args.seconds, args.top, args.resolution)
            else:
                asyncio.run(_profile(Path(tmp), args.route, args.requests, args.top))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

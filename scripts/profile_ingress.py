"""cProfile of the ingress's own Python work for the two frame routes (how the README's figures were found).

The real app in this process: `app.serve_app.api` with its middlewares, the real `StemcellIngress`
constructor (a local Ray with a real StateStore and a real StemExecutor on a tiny package), driven
through httpx's in-process ASGI transport by 8 concurrent clients.  Serve's proxy and replica wrapper
are not in it (they cost the same per request whatever the app does; `benchmarks/serve_overhead.py`
measures them), so what it shows is what Stemcell adds per request.

    PYTHONPATH=$PWD python scripts/profile_ingress.py --route frames --requests 400
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import types
from pathlib import Path

import httpx
import ray
import yaml
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests.helpers, benchmarks

import app.serve_app as serve_app  # noqa: E402
from benchmarks.harness import jpeg_frames  # noqa: E402
from tests.helpers.builders import tiny_package  # noqa: E402

ADMIN = "profile-admin-" + "x" * 20
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=("frames", "batch"), default="frames")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--top", type=int, default=30, help="entries per listing")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="stemcell-profile-") as tmp:
            asyncio.run(_profile(Path(tmp), args.route, args.requests, args.top))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

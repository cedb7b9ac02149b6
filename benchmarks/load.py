"""Load: how many cameras one Stemcell node holds within a latency SLO, and what it does past that.

Loopback only (127.0.0.1), bounded in time and in count.  One local Ray, the real Serve app with
one StemExecutor, a tiny real M-Package; the load generator runs in this process (asyncio +
httpx, no client retries so every refusal is seen).

(1) Ramp: cameras stream JPEGs at --fps each (a camera whose frame is late skips ahead, like a real
    one); the count doubles every --step-s seconds (1, 2, 4, ...) until p99 latency exceeds
    --slo-ms, errors exceed 1 %, or --max-cameras is reached.  "Held" = the most cameras whose step
    kept p99 <= SLO with < 1 % errors.
(2) Back-pressure: --burst clients send 8-frame batches back to back (no think time) for
    --burst-s seconds.  Expected: the bounded queues answer 503 with Retry-After at once (no
    unbounded queueing: the executor's queue depth stays under its limit, answered latency stays
    bounded), and nothing else fails.
(3) Crowd: --clients N clients (500 in --quick) post single frames for --clients-s seconds, each
    honouring Retry-After like `stemcell.client` does; one in --leave-every requests is abandoned
    after 50 ms (a camera that goes away mid-request).  Reported: `answered_within_2s` (share of the
    others answered with 200 or Stemcell's 503 + Retry-After within 2 s; goal 1.0), `serve_bare_503`
    (Serve's own 503, no Retry-After; goal 0), `timeouts` (no answer within 10 s; goal 0) and
    `false_500` (500 answers plus `-> 500` lines the ingress logged; abandoned requests must be 499s; goal 0).

    python benchmarks/load.py --quick --out out/reliability/load_quick.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks.harness` importable

from benchmarks.crowd import Plan, request_bytes, run_in_process  # noqa: E402
from benchmarks.harness import Deployment, deploy, jpeg_frames, worker_log_lines, write_serve_config  # noqa: E402
from benchmarks.ports import haproxy_env  # noqa: E402

BATCH = 8
MAX_QUEUED_FRAMES = 64  # limits.max_queued_frames of the served app (per executor per replica)
ANSWER_WITHIN_S = 2.0  # limits.answer_within_s of the served app, and the crowd's goal
CROWD_TIMEOUT_S = 10.0  # a crowd request not answered by then counts as a time-out
LEAVER_TIMEOUT_S = 0.05  # an abandoned request is dropped by its client after this
RETRY_AFTER_CAP_S = 5.0  # like stemcell.client.RetryPolicy.max_delay_s


@dataclass
class Window:
    """Answers collected in one measured window."""

    latencies_ms: list[float] = field(default_factory=list)  # of 200 answers
    statuses: dict[int, int] = field(default_factory=dict)  # 0 = no answer (timeout, reset)
    refusal_ms: list[float] = field(default_factory=list)  # time to a 503
    retry_after: int = 0  # 503s that carried Retry-After

    def add(self, status: int, ms: float, retry_after: str | None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies_ms.append(ms)
        elif status == 503:
            self.refusal_ms.append(ms)
            self.retry_after += retry_after is not None and retry_after.isdigit()

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.answered - self.statuses.get(200, 0)

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        values = self.latencies_ms if values is None else values
        return float(np.percentile(values, q)) if values else None


async def _post(http: httpx.AsyncClient, window: Window, url: str, **kwargs: object) -> None:
    started = time.perf_counter()
    try:
        r = await http.post(url, **kwargs)
        status, retry_after = r.status_code, r.headers.get("retry-after")
    except httpx.HTTPError:
        status, retry_after = 0, None
    window.add(status, (time.perf_counter() - started) * 1000.0, retry_after)


async def _camera(http: httpx.AsyncClient, window: Window, cam: str, token: str, frames: list[bytes], fps: float,
                  until: float) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}
    period, i = 1.0 / fps, 0
    next_at = time.perf_counter()
    while time.perf_counter() < until:
        await _post(http, window, f"/cameras/{cam}/frames", content=frames[i % len(frames)], headers=headers)
        i += 1
        next_at = max(next_at + period, time.perf_counter())  # late: skip ahead rather than queue up
        await asyncio.sleep(max(0.0, min(next_at, until) - time.perf_counter()))


async def ramp(dep: Deployment, frames: list[bytes], *, fps: float, step_s: float, slo_ms: float, max_cameras: int,
               deadline: float) -> list[dict]:
    rows = []
    cameras = 1
    limits = httpx.Limits(max_connections=max_cameras + 8, max_keepalive_connections=max_cameras + 8)
    async with httpx.AsyncClient(base_url=dep.url, timeout=30.0, limits=limits) as http:
        while cameras <= max_cameras and time.monotonic() < deadline:
            new = [f"load-{i}" for i in range(len(dep.camera_tokens), cameras)]
            dep.add_cameras(new, ["car"], fps=fps)
            ids = [f"load-{i}" for i in range(cameras)]
            warm = Window()  # first frame of each new camera verifies its token (scrypt): not measured
            await asyncio.gather(*(_camera(http, warm, c, dep.camera_tokens[c], frames, 1e6, time.perf_counter() + 1e-3)
                                   for c in new))
            window = Window()
            started = time.perf_counter()
            await asyncio.gather(*(_camera(http, window, c, dep.camera_tokens[c], frames, fps, started + step_s)
                                   for c in ids))
            elapsed = time.perf_counter() - started
            p99 = window.percentile(99)
            row = {"phase": "ramp", "cameras": cameras, "offered_fps": cameras * fps,
                   "achieved_fps": window.statuses.get(200, 0) / elapsed, "p50_ms": window.percentile(50),
                   "p99_ms": p99, "requests": window.answered, "errors": window.errors,
                   "status_503": window.statuses.get(503, 0), "no_answer": window.statuses.get(0, 0)}
            row["within_slo"] = p99 is not None and p99 <= slo_ms and window.errors <= 0.01 * max(1, window.answered)
            rows.append(row)
            print(f"  {cameras:3d} cameras: {row['achieved_fps']:6.1f}/{row['offered_fps']:.0f} fps, p50 "
                  f"{row['p50_ms'] or 0:7.1f} ms, p99 {p99 or 0:7.1f} ms, errors {window.errors}", flush=True)
            if not row["within_slo"]:
                break
            cameras *= 2
    return rows


async def burst(dep: Deployment, frames: list[bytes], *, clients: int, seconds: float, executor: object) -> dict:
    """Back-to-back batches from `clients` clients on one camera; samples the executor's queue meanwhile."""
    cam = "load-0"
    token = dep.camera_tokens[cam]
    files = [("frames", (f"{k}.jpg", frames[k % len(frames)], "image/jpeg")) for k in range(BATCH)]
    window = Window()
    depths: list[int] = []
    until = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=dep.url, timeout=30.0, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        async def client() -> None:
            while time.perf_counter() < until:
                await _post(http, window, f"/cameras/{cam}/frames:batch", files=files)

        async def sample() -> None:
            while time.perf_counter() < until:
                stats = await executor.stats.remote()  # type: ignore[attr-defined]
                depths.append(stats.queue_depth)
                await asyncio.sleep(0.1)

        started = time.perf_counter()
        await asyncio.gather(sample(), *(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ok = window.statuses.get(200, 0)
    return {"phase": "burst", "cameras": 1, "clients": clients, "requests": window.answered,
            "achieved_fps": ok * BATCH / elapsed, "p50_ms": window.percentile(50), "p99_ms": window.percentile(99),
            "errors": window.errors, "status_503": window.statuses.get(503, 0), "no_answer": window.statuses.get(0, 0),
            "other_errors": window.errors - window.statuses.get(503, 0),
            "retry_after_on_503": window.retry_after, "p99_503_ms": window.percentile(99, window.refusal_ms),
            "max_answer_ms": max(window.latencies_ms + window.refusal_ms, default=None),
            "executor_queue_max_frames": max(depths, default=None), "statuses": dict(sorted(window.statuses.items()))}


def crowd(dep: Deployment, frames: list[bytes], *, clients: int, seconds: float, leave_every: int) -> dict:
    """`clients` cameras' worth of clients posting single frames, honouring Retry-After; see (3) above.

    The crowd runs in its own process (`benchmarks/crowd.py`: uvloop, raw streams, connections opened
    before the burst), so the answer times are the server's, not this process's queueing."""
    cams = sorted(dep.camera_tokens)
    host, port = dep.url.removeprefix("http://").rsplit(":", 1)
    requests = [[request_bytes(host, int(port), f"/cameras/{cam}/frames", frame,
                               {"Authorization": f"Bearer {dep.camera_tokens[cam]}", "Content-Type": "image/jpeg"})
                 for frame in frames] for cam in (cams[k % len(cams)] for k in range(clients))]
    errors_logged = sum("-> 500" in line for line in worker_log_lines())
    closed_logged = sum("-> 499" in line for line in worker_log_lines())
    seen = run_in_process(Plan(host, int(port), requests, seconds, timeout_s=CROWD_TIMEOUT_S, leave_every=leave_every,
                               leaver_timeout_s=LEAVER_TIMEOUT_S, retry_after_cap_s=RETRY_AFTER_CAP_S),
                          answer_within_s=ANSWER_WITHIN_S)
    time.sleep(1.0)  # the ingress logs its last lines
    logged_500 = sum("-> 500" in line for line in worker_log_lines()) - errors_logged
    return {"phase": "crowd", "cameras": len(cams), "clients": clients, **seen,
            "achieved_fps": seen["ok"] / seconds, "errors": seen["requests"] - seen["ok"],
            "status_503": seen["stemcell_503"] + seen["serve_503"] + seen["bare_503"], "no_answer": seen["timeouts"],
            "answered_within_2s": seen["answered_within_s"], "serve_bare_503": seen["bare_503"],
            "false_500": max(seen["500"], logged_500),
            "client_closed_499_logged": sum("-> 499" in line for line in worker_log_lines()) - closed_logged}


def _plot(rows: list[dict], slo_ms: float, path: Path) -> None:
    from stemcell.eval import save_plot
    from stemcell.eval.plotting import plt

    ramp_rows = [r for r in rows if r["phase"] == "ramp"]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    cams = [r["cameras"] for r in ramp_rows]
    ax.plot(cams, [r["p50_ms"] or np.nan for r in ramp_rows], "o-", label="p50")
    ax.plot(cams, [r["p99_ms"] or np.nan for r in ramp_rows], "o-", label="p99")
    ax.axhline(slo_ms, color="#c44e52", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent cameras")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.bar(cams, [r["errors"] for r in ramp_rows], width=[c * 0.3 for c in cams], color="#999999", alpha=0.4)
    ax2.set_ylim(0, max(1, *(r["errors"] for r in ramp_rows)) * 1.2)
    ax2.set_ylabel("errors (bars)", color="#777777")
    ax.legend(fontsize=8, loc="upper left")
    b = next(r for r in rows if r["phase"] == "burst")
    ax.set_title(f"burst of {b['clients']} clients: {b['status_503']} x 503 + Retry-After, {b['other_errors']} other "
                 f"errors, p99 to refuse {b['p99_503_ms'] or 0:.0f} ms", fontsize=9)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="short steps, at most 32 cameras (< 60 s on idle 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--slo-ms", type=float, default=250.0, help="p99 latency objective per frame request")
    parser.add_argument("--fps", type=float, default=5.0, help="frames/s each camera sends")
    parser.add_argument("--step-s", type=float, help="measured seconds per ramp step (default 2.5 quick, 8 full)")
    parser.add_argument("--max-cameras", type=int, help="ramp bound (default 32 quick, 128 full)")
    parser.add_argument("--max-seconds", type=float, help="ramp time bound (default 25 quick, 180 full)")
    parser.add_argument("--burst", type=int, default=32, help="back-pressure clients (8-frame batches, no think time)")
    parser.add_argument("--burst-s", type=float, help="back-pressure phase length (default 3 quick, 10 full)")
    parser.add_argument("--clients", type=int, default=500, help="crowd phase: clients posting single frames")
    parser.add_argument("--clients-s", type=float, help="crowd phase length (default 5 quick, 15 full)")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy",
                        help="Serve's Python proxy or its HAProxy ingress (http.ingress) in front of the app")
    parser.add_argument("--leave-every", type=int, default=20, help="crowd: one request in this many is abandoned "
                        "after 50 ms (0: none)")
    args = parser.parse_args()
    step_s = args.step_s or (2.5 if args.quick else 8.0)
    max_cameras = args.max_cameras or (32 if args.quick else 128)
    max_seconds = args.max_seconds or (25.0 if args.quick else 180.0)
    burst_s = args.burst_s or (3.0 if args.quick else 10.0)
    crowd_s = args.clients_s or (5.0 if args.quick else 15.0)

    import ray

    from stemcell.eval import print_table, save_results
    from tests.helpers.builders import tiny_package

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stemcell-load-") as tmp:
        root = Path(tmp)
        tiny_package(root / "pkg", branchpoints=(0, 6), apps=("car",))
        if args.ingress == "haproxy":
            os.environ.update(haproxy_env())  # inherited by every process of the local Ray started next
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            dep = deploy(write_serve_config(
                root, root / "pkg", app_name="stemcell-load", namespace="stemcell-load",
                token_env="STEMCELL_LOAD_ADMIN_TOKEN",
                limits={"max_queued_frames": MAX_QUEUED_FRAMES, "retry_after_s": 1, "answer_within_s": ANSWER_WITHIN_S}),
                proxy_location="EveryNode")
            print(f"serving after {time.perf_counter() - started:.1f} s", flush=True)
            frames = jpeg_frames(16, size=(96, 128))
            rows = asyncio.run(ramp(dep, frames, fps=args.fps, step_s=step_s, slo_ms=args.slo_ms,
                                    max_cameras=max_cameras, deadline=time.monotonic() + max_seconds))
            executor = ray.get_actor("stemcell-executor-0", namespace=dep.namespace)
            rows.append(asyncio.run(burst(dep, frames, clients=args.burst, seconds=burst_s, executor=executor)))
            rows.append(crowd(dep, frames, clients=args.clients, seconds=crowd_s, leave_every=args.leave_every))
            executor_queue_limit = ray.get(executor.__ray_call__.remote(lambda s: s._batcher.max_queue_frames))  # noqa: SLF001
        finally:
            ray.shutdown()
    ramp_rows = [r for r in rows if r["phase"] == "ramp"]
    b, c = (next(r for r in rows if r["phase"] == phase) for phase in ("burst", "crowd"))
    held = max((r["cameras"] for r in ramp_rows if r["within_slo"]), default=0)
    summary = {
        "ingress": args.ingress, "slo_ms": args.slo_ms, "fps_per_camera": args.fps, "max_cameras_held": held,
        "ramp_stopped_by": ("slo" if ramp_rows and not ramp_rows[-1]["within_slo"] else "bound"),
        "backpressure_503": b["status_503"], "backpressure_retry_after_on_all_503": b["retry_after_on_503"] == b["status_503"],
        "backpressure_other_errors": b["other_errors"], "executor_queue_max_frames": b["executor_queue_max_frames"],
        "executor_queue_limit_frames": executor_queue_limit, "replica_queue_limit_frames": MAX_QUEUED_FRAMES,
        "backpressure_ok": b["status_503"] > 0 and b["retry_after_on_503"] == b["status_503"] and b["other_errors"] == 0
        and (b["executor_queue_max_frames"] or 0) <= executor_queue_limit,
        "clients": c["clients"], **{k: c[k] for k in ("answered_within_2s", "serve_bare_503", "timeouts", "false_500")},
        **{f"crowd_{k}": c[k] for k in ("ok", "stemcell_503", "serve_503", "p50_ms", "p99_ms", "p99_ms_first_second",
                                         "max_ms", "generator_cpu_ms_per_request")},
        "wall_s": time.perf_counter() - started,
    }
    print_table(rows, ["phase", "cameras", "offered_fps", "achieved_fps", "p50_ms", "p99_ms", "requests", "errors",
                       "status_503", "no_answer", "within_slo"],
                title=f"load ramp at {args.fps:g} fps/camera (SLO p99 <= {args.slo_ms:g} ms), then a {args.burst}-client "
                      f"burst and a {args.clients}-client crowd")
    print(f"\nheld {held} cameras within the SLO; burst: {b['status_503']} x 503 ({b['retry_after_on_503']} with "
          f"Retry-After, p99 {b['p99_503_ms'] or 0:.1f} ms to refuse), {b['other_errors']} other errors, executor queue "
          f"max {b['executor_queue_max_frames']} / limit {executor_queue_limit} frames; back-pressure ok: "
          f"{summary['backpressure_ok']}")
    print(f"crowd of {c['clients']} clients: answered_within_2s {c['answered_within_2s']:.3f} ({c['ok']} x 200, "
          f"{c['stemcell_503']} x Stemcell 503, {c['serve_503']} x Serve 503 + Retry-After; p50 {c['p50_ms']:.0f} ms, p99 "
          f"{c['p99_ms']:.0f} ms, max {c['max_ms']:.0f} ms), serve_bare_503 "
          f"{c['serve_bare_503']}, timeouts {c['timeouts']}, false_500 {c['false_500']} ({c['abandoned']} abandoned, "
          f"{c['client_closed_499_logged']} logged as 499)")
    out = save_results({**summary, "rows": rows}, args.out,
                       rows=[{k: v for k, v in r.items() if k != "statuses"} for r in rows])
    _plot(rows, args.slo_ms, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

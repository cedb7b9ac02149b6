"""Fuzz the Stemcell HTTP API with hostile input and count what it answers: goal zero 5xx, zero crashes.

Categories (every request goes over a raw socket, byte for byte as written here: no client library
normalises the path, the headers or the framing):

  random_bytes   random bodies, and valid JPEG/PNG frames with flipped, cut or inserted bytes
  odd_images     valid but unusual images: 1x1, 1x4000, gray, RGBA, 16-bit, progressive, mixed sizes
  bombs          tiny PNG/JPEG files declaring huge dimensions, zlib bombs in IDAT/zTXt, lying sizes
  path_ids       `..`, `%2F`, `%00`, unicode, RTL marks, very long camera ids, on every camera route
                 (frames, status, snapshot, latest) and on event snapshots
  headers        huge header values, thousands of headers, lying Content-Length, bad framing
  multipart      too many parts, oversized parts, broken boundaries, stray fields
  tokens         no token, wrong token, another camera's token, malformed Authorization headers
  json           random and deeply nested JSON on the admin routes
  methods        every route with the wrong methods and random query strings; the fleet page's routes
                 with odd `side`, `?w=&h=`, static-file traversal and admin-only views
  races          cameras added, used, removed concurrently with requests for them

A case *fails* when the answer is a 5xx, or when no answer comes back for a well-formed request
(the server closing a connection on malformed HTTP is fine).  After the campaign the deployment
must still serve a good camera.

    python benchmarks/security_fuzz.py --quick --out out/reliability/security_fuzz_quick.json
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks.harness` importable

from benchmarks.fuzz_cases import GOOD, OTHER, Case, Tokens, generate_cases  # noqa: E402


@dataclass(frozen=True)
class Result:
    case: Case
    status: int  # 0: connection closed / reset without a status line
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status >= 500 or (self.status == 0 and self.case.well_formed)


def _recv_status(sock: socket.socket) -> int:
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    parts = buf.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0
    return int(parts[1])


def send(base_url: str, case: Case, timeout_s: float = 60.0) -> Result:
    """Send `case` on a fresh connection (Connection: close) and read the status line."""
    url = urlsplit(base_url)
    head = [f"{case.method} {case.path} HTTP/1.1", f"Host: {url.hostname}", "Connection: close"]
    names = {k.lower() for k, _ in case.headers}
    head += [f"{k}: {v}" for k, v in case.headers]
    if "content-length" not in names and "transfer-encoding" not in names and (case.body or case.method == "POST"):
        head.append(f"Content-Length: {len(case.body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + case.body
    started = time.perf_counter()
    try:
        with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as sock:
            try:
                sock.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (413, 431) and close before reading everything we send
            status = _recv_status(sock)
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        status = 0
    return Result(case, status, time.perf_counter() - started)


def run_campaign(base_url: str, cases: list[Case], concurrency: int = 4) -> list[Result]:
    """Every case once, `concurrency` at a time (concurrent hostile requests also probe shared state)."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda c: send(base_url, c), cases))


def summarise(results: list[Result]) -> list[dict]:
    """One row per category: cases tried, failures (5xx or no answer), and the statuses seen."""
    rows = []
    for category in sorted({r.case.category for r in results}):
        mine = [r for r in results if r.case.category == category]
        statuses = Counter(r.status for r in mine)
        rows.append({"category": category, "tried": len(mine), "failures": sum(r.failed for r in mine),
                     "status_5xx": sum(n for s, n in statuses.items() if s >= 500),
                     "no_answer": statuses.get(0, 0), "statuses": dict(sorted(statuses.items())),
                     "max_s": max(r.seconds for r in mine)})
    return rows


def register_fuzz_cameras(dep: object) -> Tokens:
    """GOOD and OTHER with the package's first app (`dep` is a `benchmarks.harness.Deployment`)."""
    dep.add_cameras([GOOD, OTHER], ["car"])  # type: ignore[attr-defined]
    return Tokens(dep.admin_token, dep.camera_tokens[GOOD], dep.camera_tokens[OTHER])  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- benchmark
def _plot(rows: list[dict], path: Path) -> None:
    from stemcell.eval import save_plot
    from stemcell.eval.plotting import plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["category"] for r in rows]
    ax.bar(names, [r["tried"] for r in rows], color="#4c72b0", label="tried")
    ax.bar(names, [r["failures"] for r in rows], color="#c44e52", label="failures (5xx / no answer)")
    ax.set_ylabel("requests")
    ax.set_title(f"security fuzz: {sum(r['tried'] for r in rows)} tried, {sum(r['failures'] for r in rows)} failures",
                 fontsize=9)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller campaign (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--mutations", type=int, help="mutated JPEG/PNG frames (default 60 quick, 1500 full)")
    parser.add_argument("--random-bodies", type=int, help="random bodies and JSON docs (default 30 quick, 500 full)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mutations = args.mutations if args.mutations is not None else (60 if args.quick else 1500)
    random_bodies = args.random_bodies if args.random_bodies is not None else (30 if args.quick else 500)

    import ray

    from benchmarks.harness import deploy, write_serve_config
    from stemcell.client import Camera
    from stemcell.eval import print_table, save_results
    from tests.helpers.builders import tiny_package

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stemcell-fuzz-") as tmp:
        root = Path(tmp)
        tiny_package(root / "pkg", branchpoints=(0, 6), apps=("car",))
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            dep = deploy(write_serve_config(root, root / "pkg", app_name="stemcell-fuzz", namespace="stemcell-fuzz",
                                            token_env="STEMCELL_FUZZ_ADMIN_TOKEN",
                                            limits={"max_image_bytes": 1 << 20, "max_pixels": 1 << 20,
                                                    "max_batch_frames": 8, "max_batch_bytes": 4 << 20}),
                         proxy_location="EveryNode")
            tokens = register_fuzz_cameras(dep)
            frame = np.random.default_rng(args.seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            cases = generate_cases(tokens, random.Random(args.seed), mutations=mutations, random_bodies=random_bodies,
                                   frame=frame)
            print(f"serving after {time.perf_counter() - started:.1f} s; sending {len(cases)} cases", flush=True)
            results = run_campaign(dep.url, cases)
            with Camera(dep.url, tokens.good, GOOD, retries=0) as good:
                still_serves = len(good.infer(frame)["results"]) == 1
        finally:
            ray.shutdown()
    rows = summarise(results)
    failures = [{"category": r.case.category, "name": r.case.name, "status": r.status} for r in results if r.failed]
    print_table(rows, ["category", "tried", "failures", "status_5xx", "no_answer", "statuses", "max_s"],
                title=f"security fuzz ({len(results)} requests, seed {args.seed})")
    print(f"\n{sum(r['failures'] for r in rows)} failures; good camera still served afterwards: {still_serves}")
    for f in failures[:20]:
        print(f"  FAILED {f}")
    summary = {"tried": len(results), "failures": len(failures), "still_serves": still_serves, "seed": args.seed,
               "failed_cases": failures, "rows": rows,
               "cases": [{"category": r.case.category, "name": r.case.name, "status": r.status, "s": round(r.seconds, 4)}
                         for r in results]}
    out = save_results(summary, args.out, rows=[{**r, "statuses": json.dumps(r["statuses"])} for r in rows])
    _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Start reliability of Serve's two ingresses: is `http.ingress: haproxy` safe as the default?

Starts a fresh local Ray and the real Stemcell app (tiny M-Package) --starts times behind the chosen
ingress (the environment `http.ingress` gives: for haproxy the feature flag and the 30 s readiness
check, `stemcell.serve_config.HttpSection.serve_env`), and counts the starts that answered
`GET /healthz` with 200 within --ready-s; each start's time to that answer and any error are kept.
Behind HAProxy a start also checks that HAProxy itself answers (`GET /-/healthz`).

    python benchmarks/ingress_starts.py --starts 10 --ingress haproxy --out out/reliability/starts_haproxy.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks.harness` importable

from benchmarks.harness import deploy, write_serve_config  # noqa: E402
from benchmarks.ports import haproxy_env  # noqa: E402


def one_start(root: Path, package: Path, ingress: str, ready_s: float, k: int) -> dict:
    """A fresh local Ray + Stemcell behind `ingress`; whether it answered, and when."""
    import ray
    from ray import serve

    env = haproxy_env()
    for key in env:
        os.environ.pop(key, None)
    if ingress == "haproxy":
        os.environ.update(env)  # inherited by every process of the local Ray started next
    started = time.perf_counter()
    row: dict = {"start": k, "ingress": ingress, "ok": False, "error": None}
    try:
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        dep = deploy(write_serve_config(root, package, app_name=f"starts-{k}", namespace=f"starts-{k}",
                                        token_env="STEMCELL_STARTS_ADMIN_TOKEN"))
        deadline = time.monotonic() + ready_s
        with httpx.Client(base_url=dep.url, timeout=5.0) as http:
            while time.monotonic() < deadline:
                try:
                    healthy = http.get("/healthz").status_code == 200
                    if healthy and (ingress == "proxy" or http.get("/-/healthz").status_code == 200):
                        row["ok"] = True
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        row["ready_s"] = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - a failed start is the measurement
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        row["ready_s"] = time.perf_counter() - started
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    print(f"  start {k}: {'ok' if row['ok'] else 'FAILED'} after {row['ready_s']:.1f} s {row['error'] or ''}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy")
    parser.add_argument("--ready-s", type=float, default=120.0, help="a start answering later counts as failed")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from stemcell.eval import print_table, save_results
    from tests.helpers.builders import tiny_package

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stemcell-starts-") as tmp:
        root = Path(tmp)
        tiny_package(root / "pkg", branchpoints=(0, 6), apps=("car",))
        rows = [one_start(root, root / "pkg", args.ingress, args.ready_s, k) for k in range(args.starts)]
    ok = [r for r in rows if r["ok"]]
    summary = {"ingress": args.ingress, "starts": len(rows), "started_ok": len(ok),
               "ready_s_max": max((r["ready_s"] for r in ok), default=None),
               "load_before": load_before, "load_after": os.getloadavg()[0]}
    print_table(rows, ["start", "ingress", "ok", "ready_s", "error"], title=f"{args.starts} starts behind {args.ingress}")
    print(f"\n{len(ok)}/{len(rows)} starts answered within {args.ready_s:g} s (load {load_before:.1f} -> "
          f"{summary['load_after']:.1f})")
    save_results({**summary, "rows": rows}, args.out, rows=rows)


if __name__ == "__main__":
    main()

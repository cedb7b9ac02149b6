"""The control plane at 10,000 cameras (100,000 in full mode), on the pure classes: no Ray cluster.

What a Stemcell control plane does per camera and per request, timed on the classes the actors wrap
(a temporary SQLite `StateStore`, replicas' `ControlTable`s following its feed from threads,
`Placement`, `TwoLevelPlanner` over a real tiny M-Package with 3 apps), one process:

- `register_one_ms_at_n`: adding one camera when n exist (what `StemcellService.add_cameras` does
  for one, but the executor call: read its plan hints, resolve its apps, the store places it, its
  plan entry, one store commit with its token MAC and slot); goal < 20 ms at 10,000 (was 1,190 ms:
  the whole plan was rebuilt).
- `register_bulk_s`: registering the fleet in batches of 1,000 (`POST /admin/cameras:bulk`), each
  one store transaction; goal < 60 s for 10,000 (was ~6,370 s one by one).
- `plan_round_s`: one Planner round once the schedule cache is warm (problems per camera class, the
  two-level split, per-executor Mainstream); goal < 1 s at 10,000 (the window is 10 s; was 12.3 s).
  `plan_round_cold_s` is the first round (empty cache); `plan_round_retrain_s` a warm round with
  retraining jobs (five inference fractions tried); `decision_rows_*_save_s` what storing a round's
  per-camera decision costs (first time, and unchanged).
- `token_check_us`: a replica's check of a camera token (HMAC + constant-time compare); goal < 100.
  `token_check_store_legacy_ms`: what the store's scrypt check cost per miss before (for contrast).
- `route_update_ms` / `token_revoke_ms`: from the store's write to the change in the tables of
  `--replicas` replicas long-polling the feed (the slowest replica).
- `moved_fraction_add_executor`: cameras that move when one executor is added to `--executors`
  (goal <= 2/N; `crc32 % count` moved 98.4%); `max_load_over_mean`: the most loaded executor's
  weighted load over the mean after placing the fleet (goal <= 1.25); `failed_executor_spread`: over
  how many executors a failed one's cameras spread.

Prints a table, writes the JSON (`--out`) and a PNG beside it.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from stemcell.control.camera_plans import PlanHints, camera_plan, resolve_apps
from stemcell.control.contracts import AppRequest, CameraSpec
from stemcell.control.placement import Placement
from stemcell.control.planning import decision_view
from stemcell.control.two_level import TwoLevelPlanner, camera_demands
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.package.manifest import Manifest
from stemcell.scheduling.planner import PlannerContext
from stemcell.scheduling.shares import placement_index
from stemcell.scheduling.slicing import RetrainJob
from stemcell.state import PLANNER, StateStore, new_token
from stemcell.state.tokens import hash_token, verify_token
from tests.helpers.feed import Follower

APPS = ("car", "person", "bus")
BATCH = 1000  # cameras per bulk registration call


def _requests(i: int) -> list[AppRequest]:
    """One to three apps per camera (the fleet is mixed: apps-per-camera weighting matters)."""
    return [AppRequest(a, None, None) for a in APPS[: 1 + i % 3]]


class Registrar:
    """What the ingress does to register cameras, without Ray: hints, resolve, place, plan entry, one commit."""

    def __init__(self, manifest: Manifest, store: StateStore, executors: int) -> None:
        self.manifest, self.store = manifest, store
        store.set_executor_count(executors)

    def register(self, ids: list[str], index: int) -> None:
        own = self.store.camera_plan_entries(ids)
        shared = self.store.shared_branchpoints()
        specs = []
        for k, cam in enumerate(ids):
            apps = resolve_apps(self.manifest, _requests(index + k), 10.0, PlanHints(own.get(cam, {}), shared))
            specs.append(CameraSpec(cam, 10.0, tuple(apps)))
        self.store.place_cameras(specs)  # (then each executor's add_camera, not timed here)
        plans = {s.camera_id: camera_plan(self.manifest, s) for s in specs}
        self.store.put_cameras([(s.camera_id, s.as_config(), new_token()) for s in specs], plans)


def _until_all(replicas: list[Follower], check: Any, start: float, timeout_s: float = 10.0) -> float:
    """Milliseconds from `start` (before the store's write) until every replica's table passes `check`."""
    while not all(check(r.table) for r in replicas):
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError("a replica did not see the change")
        time.sleep(0.0002)
    return (time.perf_counter() - start) * 1e3


def _package(root: Path, given: Path | None) -> Manifest:
    if given is not None:
        return Manifest.model_validate_json((given / "manifest.json").read_text())
    from tests.helpers.builders import tiny_package

    return tiny_package(root / "pkg", branchpoints=(0, 3), apps=APPS)


def _register(reg: Registrar, n: int, marks: list[int], log: list[dict[str, Any]]) -> tuple[float, dict[int, float]]:
    """Bulk-register n cameras in batches; at each mark, time 20 single registrations (then removed)."""
    one_ms: dict[int, float] = {}
    bulk_s = 0.0
    for start in range(0, n, BATCH):
        ids = [f"cam-{i}" for i in range(start, min(n, start + BATCH))]
        t = time.perf_counter()
        reg.register(ids, start)
        bulk_s += time.perf_counter() - t
        have = start + len(ids)
        if have in marks:
            times = []
            for k in range(20):
                cam = f"probe-{have}-{k}"
                t = time.perf_counter()
                reg.register([cam], k)
                times.append((time.perf_counter() - t) * 1e3)
                reg.store.delete_camera(cam)
            one_ms[have] = statistics.median(times)
            log.append({"cameras": have, "register_one_ms": one_ms[have], "bulk_so_far_s": bulk_s})
            print(f"  {have:>7} cameras: one more {one_ms[have]:.1f} ms, bulk so far {bulk_s:.1f} s", flush=True)
    return bulk_s, one_ms


def _plan(manifest: Manifest, store: StateStore, executors: int) -> dict[str, float]:
    cameras = [CameraSpec.from_config(c.camera_id, c.config) for c in store.list_cameras()]
    roles = {c.camera_id: f"ex-{placement_index(c.camera_id, executors)}" for c in cameras}
    planner = TwoLevelPlanner()
    out = {}
    for key, rows, jobs in (("plan_round_cold_s", [("conv3", 4.0)], ()), ("plan_round_s", [("conv3", 4.01)], ()),
                            ("plan_round_retrain_s", [("conv3", 3.99)], (RetrainJob("j", (0.02, 0.01), 2),))):
        t = time.perf_counter()
        ctx = PlannerContext(executors * 0.25, camera_demands(manifest, cameras, rows, correlation=0.5), retrain_jobs=jobs)
        decision = planner.plan(ctx, cameras, roles)
        out[key] = time.perf_counter() - t
        assert sum(s.budget for s in decision.schedules.values()) <= ctx.total_gpu + 1e-6
    out["schedule_cache_misses"] = planner.cache.misses
    view = decision_view(decision)["cameras"]
    for key in ("decision_rows_first_save_s", "decision_rows_unchanged_save_s"):  # what a round stores
        t = time.perf_counter()
        store.put_decision_cameras(view)
        out[key] = time.perf_counter() - t
    return out


def _placement_figures(n: int, executors: int) -> dict[str, float]:
    rng = random.Random(0)
    fleet = [(f"cam-{i}", float(rng.choice([1, 2, 3, 3, 5, 10]))) for i in range(n)]
    placement = Placement(executors)
    placement.place_many(fleet)
    balance = placement.max_load_over_mean()
    moved = placement.resize(executors + 1)
    spread = placement.mark_down(0)
    crc = sum(zlib.crc32(c.encode()) % executors != zlib.crc32(c.encode()) % (executors + 1) for c, _ in fleet) / n
    return {"moved_fraction_add_executor": len(moved) / n, "moved_fraction_crc32": crc, "max_load_over_mean": balance,
            "failed_executor_spread": len(set(spread.values()))}


def _tokens(store: StateStore, replicas: list[Follower]) -> dict[str, float]:
    table = replicas[0].table
    cams = list(table.token_macs)[:1000]
    tokens = {c: new_token() for c in cams[:10]}
    store.put_cameras([(c, store.get_camera(c).config, t) for c, t in tokens.items()])  # rotated
    _until_all(replicas, lambda tb: all(tb.check_token(c, t) for c, t in tokens.items()), time.perf_counter())
    probe = [(c, tokens.get(c, "x" * 43)) for c in cams] * 10
    t = time.perf_counter()
    for cam, tok in probe:
        table.check_token(cam, tok)
    check_us = (time.perf_counter() - t) / len(probe) * 1e6
    legacy = hash_token(tokens[cams[0]])
    t = time.perf_counter()
    for _ in range(3):
        verify_token(tokens[cams[0]], legacy)
    legacy_ms = (time.perf_counter() - t) / 3 * 1e3
    revoke = []
    for cam in cams[:5]:
        start = time.perf_counter()
        store.revoke_camera_token(cam)
        revoke.append(_until_all(replicas, lambda tb, c=cam: tb.check_token(c, tokens[c]) is False, start))
    routes = []
    for g in range(5):
        start = time.perf_counter()
        store.save_plan_section(PLANNER, {"routes": {"ex-0": f"ex-0-g{g + 1}"}})
        routes.append(_until_all(replicas, lambda tb, g=g: tb.route_table.get("ex-0") == f"ex-0-g{g + 1}", start))
    return {"token_check_us": check_us, "token_check_store_legacy_ms": legacy_ms,
            "token_revoke_ms": statistics.median(revoke), "route_update_ms": statistics.median(routes)}


def _plot(log: list[dict[str, Any]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["cameras"] for r in log], [r["register_one_ms"] for r in log], marker="o", label="register one camera")
    ax.axhline(20, linestyle="--", color="grey", label="goal 20 ms")
    ax.set_xscale("log")
    ax.set_xlabel("cameras registered")
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title("Registration cost vs fleet size (pure classes, SQLite)")
    save_plot(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 cameras instead of 100,000")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (PNG beside it)")
    parser.add_argument("--executors", type=int, default=64, help="executor slots")
    parser.add_argument("--replicas", type=int, default=4, help="ingress replicas following the feed")
    parser.add_argument("--package", type=Path, help="an M-Package to plan with (default: build a tiny one)")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    marks = [m for m in (1_000, 10_000, 100_000) if m <= n]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stemcell-scale-") as tmp:
        root = Path(tmp)
        manifest = _package(root, args.package)
        setup_s = time.perf_counter() - started
        print(f"package ready in {setup_s:.1f} s; registering {n} cameras", flush=True)
        with StateStore(root / "state.db") as store:
            log: list[dict[str, Any]] = []
            bulk_s, one_ms = _register(Registrar(manifest, store, args.executors), n, marks, log)
            replicas = [Follower(store, wait_s=0.5) for _ in range(args.replicas)]
            for r in replicas:
                r.start()
            figures = {**_tokens(store, replicas), **_plan(manifest, store, args.executors)}
            for r in replicas:
                r.stop.set()
    figures |= _placement_figures(n, args.executors)
    goal_moved = 2 / (args.executors + 1)
    summary = {"cameras": n, "executors": args.executors, "replicas": args.replicas, "apps_per_camera": "1-3",
               "register_one_ms_at_n": one_ms, "register_bulk_s": bulk_s * 10_000 / n,
               "register_bulk_s_all": bulk_s, **figures, "setup_s": setup_s,
               "seconds": time.perf_counter() - started,
               "goals": {"register_one_ms_at_10000": 20, "register_bulk_s": 60, "plan_round_s": 1.0,
                         "token_check_us": 100, "moved_fraction_add_executor": goal_moved, "max_load_over_mean": 1.25}}
    rows = [{"figure": k, "value": v, "goal": summary["goals"].get(k, "")} for k, v in summary.items()
            if isinstance(v, (int, float)) and k not in ("cameras", "executors", "replicas")]
    rows.insert(0, {"figure": "register_one_ms_at_10000", "value": one_ms.get(10_000, float("nan")), "goal": 20})
    print_table(rows, ["figure", "value", "goal"], title=f"control plane at {n} cameras, {args.executors} executors")
    out = save_results(summary, args.out, rows=log)
    _plot(log, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {summary['seconds']:.1f} s")


if __name__ == "__main__":
    main()

"""Fault injection: kill parts of a running Stemcell while cameras stream, and measure what users see.

A local multi-node Ray cluster (head: ingress + state store; N logical-GPU workers: executors,
spread one per node), the real Serve app from a real serve.yaml, and >= 4 cameras streaming JPEGs
over HTTP through `stemcell.client.Camera` (with its retries).  Then, one after the other:

  executor        `ray.kill` a StemExecutor (Ray restarts it; its cameras come back from the StateStore)
  retrain_worker  `ray.kill` a RetrainWorker that has published model versions (it reloads them from disk)
  planner         `ray.kill` the Planner after a planning round (it reloads roles/routes/decision from the store)
  node            kill a worker node's processes ungracefully (its executor restarts on another node)

Per fault: `requests` (HTTP exchanges incl. retries, and calls to the faulted actor) from the
injection until recovery + 1 s, `failed_requests` among them, `frames_lost` (frames that failed
even after the client's retries), `recovery_s` (injection -> the component answers again and every
camera had a frame sent after the injection succeed), split into `restart_s` (until the component
itself answered again: Ray's restart of the process) and `service_recovery_s` (until every camera
had a frame sent after the injection answered: what users see; the ingress fails a dead executor's
cameras over to a live one, so this does not wait for the restart), and `state_lost` (cameras missing or changed in the plan or on their executor, published model
versions or planner roles that did not come back).
Goal: state_lost = 0 and frames_lost = 0 everywhere, recovery < 10 s on CPU.

Node failure detection is tuned for a local cluster (`harness.FAST_FAILURE_DETECTION`, ~2 s);
Ray's defaults take ~15-30 s to declare a node dead, which adds directly to `node` recovery.

    python benchmarks/faults.py --quick --out out/reliability/faults_quick.json
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks.harness` importable

from benchmarks.harness import (GPU_LABELS, HEAD_LABELS, CameraFleet, Deployment, add_worker,  # noqa: E402
                                answers_away_from, deploy, jpeg_frames, node_of_actor, start_cluster,
                                stop_cluster, write_serve_config)

ALL_FAULTS = ("executor", "retrain_worker", "planner", "node")
QUICK_FAULTS = ("executor", "node")
SETTLE_S = 1.0
# what the Planner reports about its own process (counters, timings, what its last round did), not state
VOLATILE_PLANNER_KEYS = frozenset({"rounds", "updated_at", "last_decision_ms", "last_switches", "last_camera_changes",
                                   "teacher"})


@dataclass(frozen=True)
class Fault:
    """How to break one component, how to see it back, and what durable state it must keep."""

    name: str
    inject: Callable[[], None]
    back: Callable[[], bool]  # the component answers again
    state: Callable[[], Any]  # what must survive: compared before vs after
    probe: Callable[[], Any] | None = None  # a client's call to the component (returns an ObjectRef), every 100 ms


def _answers(call: Callable[[], Any], timeout_s: float = 2.0) -> bool:
    try:
        ray.get(call(), timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - dead, restarting or slow all mean "not back yet"
        return False


def _pid(handle: Any, timeout_s: float = 30.0) -> int:
    return ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=timeout_s)


def _restarted(handle: Any, call: Callable[[], Any]) -> Callable[[], bool]:
    """`back` for a killed actor: a new process answers `call` (a kill is asynchronous, so the old
    process can still answer for a moment after `ray.kill` returns)."""
    before = _pid(handle)

    def back() -> bool:
        try:
            return _pid(handle, timeout_s=2.0) != before and _answers(call)
        except Exception:  # noqa: BLE001 - dead or restarting: not back yet
            return False

    return back


class Prober:
    """Calls a component every 100 ms in a thread (an edge pulling updates, an operator reading the plan)."""

    def __init__(self, call: Callable[[], Any] | None) -> None:
        self.calls = self.failed = 0
        self._call, self._stop = call, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.calls += 1
            self.failed += not _answers(self._call)
            self._stop.wait(0.1)

    def __enter__(self) -> Prober:
        if self._call is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._call is not None:
            self._thread.join()


def _lost(before: Any, after: Any, what: str) -> list[str]:
    """Names of the entries of `before` that are missing or changed in `after` (dicts by key)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [f"{what}:{k}" for k, v in before.items() if after.get(k) != v]
    return [] if before == after else [what]


def _executor_cameras(dep: Deployment) -> dict[str, Any]:
    names = sorted(set(dep.camera_executors.values()))
    handles = {n: ray.get_actor(n, namespace=dep.namespace) for n in names}
    return {cam: apps for n in names for cam, apps in ray.get(handles[n].cameras.remote(), timeout=30).items()}


def executor_fault(dep: Deployment, name: str) -> Fault:
    handle = ray.get_actor(name, namespace=dep.namespace)
    return Fault("executor", lambda: ray.kill(handle, no_restart=False), _restarted(handle, handle.cameras.remote),
                 lambda: _executor_cameras(dep))


def node_fault(dep: Deployment, cluster: Any, name: str) -> Fault:
    victim = next(n for n in cluster.worker_nodes if n.node_id == node_of_actor(name, dep.namespace))
    handle = ray.get_actor(name, namespace=dep.namespace)

    def back() -> bool:  # answering from another node (a call can still reach the dying one for a moment)
        return answers_away_from(name, dep.namespace, victim.node_id) and _answers(handle.cameras.remote)

    return Fault("node", lambda: cluster.remove_node(victim, allow_graceful=False), back, lambda: _executor_cameras(dep))


def retrain_fault(package: Path, persist: Path, namespace: str) -> Fault:
    """A RetrainWorker that published two versions for one camera's app; an edge pulls updates meanwhile."""
    from actors.retrain_worker import RetrainWorker
    from stemcell.control.contracts import AppRun
    from tests.helpers.builders import random_frames

    worker = RetrainWorker.options(name="stemcell-retrain-fault", namespace=namespace, num_cpus=0.25, num_gpus=0.1,
                                   max_restarts=-1, max_task_retries=-1).remote(
        str(package), persist_dir=str(persist), config={"iterations": 4, "batch_size": 4}, share=0.1, auto=False)
    ray.get(worker.set_camera.remote("edge-1", [AppRun("car", 0, 10.0)]), timeout=120)
    for round_ in range(2):
        data = random_frames(12, seed=round_)
        stamps = [20.0 * round_ + i for i in range(12)]
        ray.get(worker.add_samples.remote("edge-1", stamps, data.frames, data.presence.astype(np.float32)), timeout=120)
        ray.get(worker.run_pending.remote(), timeout=120)

    def versions() -> Any:
        found = ray.get(worker.update_since.remote("edge-1", "car", None), timeout=30)
        return None if found is None else found[1].version

    def pull() -> Any:
        return worker.update_since.remote("edge-1", "car", 0)

    return Fault("retrain_worker", lambda: ray.kill(worker, no_restart=False), _restarted(worker, pull), versions,
                 pull)


def planner_fault(config_path: Path) -> Fault:
    """The Planner after one planning round (no share changes: min_change=1), read by an operator meanwhile."""
    from actors.planner import get_or_create_planner
    from stemcell.serve_config import PlannerSection, load_serve_config

    planner = get_or_create_planner(load_serve_config(config_path), PlannerSection(window_s=0, min_change=1.0))
    ray.get(planner.replan.remote(), timeout=120)

    def section() -> Any:  # the planner's view less what is per-process by design (round counter, timings)
        view = ray.get(planner.current_plan.remote(), timeout=30)
        return {k: v for k, v in view.items() if k not in VOLATILE_PLANNER_KEYS}

    return Fault("planner", lambda: ray.kill(planner, no_restart=False), _restarted(planner, planner.current_plan.remote),
                 section, planner.current_plan.remote)


def measure(fault: Fault, dep: Deployment, fleet: CameraFleet, cameras: list[str], timeout_s: float) -> dict:
    with dep.admin() as admin:
        plan_before = admin.plan()["cameras"]
    state_before = fault.state()
    with Prober(fault.probe) as prober:
        t0 = time.monotonic()
        fault.inject()
        deadline = t0 + timeout_s
        while not fault.back() and time.monotonic() < deadline:
            time.sleep(0.05)
        t_back = time.monotonic()
        t_cams = fleet.wait_for_success_after(t0, cameras, max(1.0, deadline - time.monotonic()))
        recovered = t_back < deadline and t_cams is not None
        t_end = max(t_back, t_cams or t_back)
        time.sleep(SETTLE_S)
    calls, failed_calls = prober.calls, prober.failed
    # An executor takes a camera back lazily, on the camera's next frame after failback: compare the
    # state once every camera has been served again, so a camera between hosts is not counted lost.
    fleet.wait_for_success_after(time.monotonic(), cameras, 10.0)
    outcomes, attempts = fleet.snapshot()
    window = [a for a in attempts if t0 <= a.t <= t_end + SETTLE_S]
    with dep.admin() as admin:
        plan_after = admin.plan()["cameras"]
    lost = _lost(plan_before, plan_after, "camera") + _lost(state_before, fault.state(), fault.name)
    return {"fault": fault.name, "requests": len(window) + calls,
            "failed_requests": sum(a.status != 200 for a in window) + failed_calls,
            "frames_lost": sum(not o.ok for o in outcomes if t0 <= o.started <= t_end + SETTLE_S),
            "recovery_s": round(t_end - t0, 3) if recovered else None, "restart_s": round(t_back - t0, 3),
            "service_recovery_s": None if t_cams is None else round(t_cams - t0, 3),
            "state_lost": len(lost), "lost": lost,
            "statuses": sorted({a.status for a in window if a.status != 200})}


def _plot(rows: list[dict], path: Path) -> None:
    from stemcell.eval import save_plot
    from stemcell.eval.plotting import plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r["fault"] for r in rows]
    x = np.arange(len(rows))
    axes[0].bar(x - 0.2, [r["recovery_s"] or 0 for r in rows], 0.4, color="#4c72b0", label="component + service")
    axes[0].bar(x + 0.2, [r["service_recovery_s"] or 0 for r in rows], 0.4, color="#55a868", label="service (users)")
    axes[0].set_xticks(x, names)
    axes[0].axhline(10, color="#c44e52", ls="--", lw=1, label="goal 10 s")
    axes[0].set_ylabel("recovery (s)")
    axes[0].legend(fontsize=8)
    axes[1].bar(names, [r["requests"] for r in rows], color="#8fa8d0", label="requests")
    axes[1].bar(names, [r["failed_requests"] for r in rows], color="#c44e52", label="failed (retried)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"faults while {rows[0].get('cameras', '?')} cameras stream; state lost: "
                 f"{sum(r['state_lost'] for r in rows)}", fontsize=9)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_FAULTS)} (< 60 s on idle 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (Parquet and PNG beside it)")
    parser.add_argument("--faults", nargs="+", choices=ALL_FAULTS, help="which faults, in order (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="logical-GPU worker nodes (>= 2 for the node fault)")
    parser.add_argument("--cameras", type=int, default=4, help="streaming cameras, spread over 2 executors")
    parser.add_argument("--fps", type=float, default=5.0, help="frames/s each camera sends")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a recovery after this many seconds")
    args = parser.parse_args()
    faults = args.faults or (QUICK_FAULTS if args.quick else ALL_FAULTS)
    missing = {"retrain_worker": "actors.retrain_worker", "planner": "actors.planner"}
    not_run = [f for f in faults if f in missing and importlib.util.find_spec(missing[f]) is None]

    from stemcell.eval import print_table, save_results
    from tests.helpers.builders import tiny_package

    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="stemcell-faults-") as tmp:
        root = Path(tmp)
        with ThreadPoolExecutor(1) as background:  # train the tiny package while the nodes start
            package = background.submit(tiny_package, root / "pkg", branchpoints=(0, 6), apps=("car",))
            cluster = start_cluster(args.workers, head_cpus=2, worker_cpus=2, worker_gpus=1)
            package.result()
        try:
            config = write_serve_config(root, root / "pkg", app_name="stemcell-faults", namespace="stemcell-faults",
                                        token_env="STEMCELL_FAULTS_ADMIN_TOKEN", ingress={"node_labels": HEAD_LABELS},
                                        executors={"count": 2, "num_cpus": 0.5, "node_labels": GPU_LABELS})
            dep = deploy(config)
            cams = dep.add_balanced_cameras(per_executor=(args.cameras + 1) // 2, executors=2, apps=["car"])
            executors = sorted(set(dep.camera_executors.values()))
            print(f"{len(cams)} cameras on {executors} after {time.perf_counter() - started:.1f} s", flush=True)
            builders: dict[str, Callable[[], Fault]] = {
                "executor": lambda: executor_fault(dep, executors[0]),
                "retrain_worker": lambda: retrain_fault(root / "pkg", root / "versions", dep.namespace),
                "planner": lambda: planner_fault(config),
                "node": lambda: node_fault(dep, cluster, executors[-1]),
            }
            with CameraFleet(dep.url, {c: dep.camera_tokens[c] for c in cams}, jpeg_frames(8), fps=args.fps) as fleet:
                time.sleep(2.0)
                for name in faults:
                    if name in not_run:
                        continue
                    row = measure(builders[name](), dep, fleet, cams, args.timeout)
                    rows.append({**row, "cameras": len(cams)})
                    print(f"  {name}: recovery {row['recovery_s']} s (service {row['service_recovery_s']} s), "
                          f"{row['failed_requests']}/{row['requests']} "
                          f"failed, frames lost {row['frames_lost']}, state lost {row['state_lost']}", flush=True)
                    if name == "node":
                        add_worker(cluster)  # the cluster autoscaler's job on a real cluster
                outcomes, attempts = fleet.snapshot()
        finally:
            stop_cluster(cluster)
    summary = {"faults": rows, "not_run": not_run, "cameras": len(cams), "fps": args.fps, "workers": args.workers,
               "frames_total": len(outcomes), "frames_lost_total": sum(not o.ok for o in outcomes),
               "attempts_total": len(attempts), "wall_s": time.perf_counter() - started}
    print_table(rows, ["fault", "requests", "failed_requests", "frames_lost", "recovery_s", "restart_s",
                       "service_recovery_s", "state_lost",
                       "statuses"],
                title=f"faults while {len(cams)} cameras stream at {args.fps:g} fps ({args.workers} GPU workers)")
    if not_run:
        print(f"not run (module missing): {not_run}")
    print(f"{summary['frames_lost_total']} of {summary['frames_total']} frames lost after retries; "
          f"wall {summary['wall_s']:.1f} s")
    out = save_results(summary, args.out, rows=[{**r, "statuses": str(r["statuses"]),
                                                              "lost": str(r["lost"])} for r in rows])
    if rows:
        _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

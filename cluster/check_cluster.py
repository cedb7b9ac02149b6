"""Check a fresh cluster before deploying Stemcell: GPU shares schedule, CUDA works, code imports.

    ray submit cluster/aws-gpu.yaml cluster/check_cluster.py            # on a `ray up` cluster
    python cluster/check_cluster.py --local-gpus 1 --allow-cpu          # try it without a cluster

Runs ``--tasks`` tasks of ``--gpu-share`` GPU each, the way Stemcell packs executors onto one
GPU. On a cluster whose GPU workers start at zero, the pending tasks make the autoscaler launch
a GPU node, so the first run can take several minutes (``--timeout``).

Then every running StemExecutor (a deployed Serve app) is asked what it serves on: an executor
placed on a node that has GPUs but serving on the CPU (driver older than the image's torch needs,
no container GPU runtime, CUDA_VISIBLE_DEVICES emptied) fails the check, naming the executor and
its node. Ray's fractional GPUs would otherwise hide it: the executor runs, just 10-50x slower.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from typing import Any

import ray


@ray.remote(num_cpus=0)
def probe() -> dict[str, object]:
    """What one fractional-GPU worker sees: its node, its GPU, and whether Stemcell imports."""
    import torch

    import stemcell  # noqa: F401  (the check is that it imports on the worker)

    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch_cuda": torch.version.cuda,
        "driver": _driver_version(),
        "STEMCELL_ADMIN_TOKEN set": bool(os.environ.get("STEMCELL_ADMIN_TOKEN")),
    }


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    return out.strip().splitlines()[0] if out.strip() else "none"


EXECUTOR_CLASSES = ("StemExecutor", "_RoutedExecutor", "RoutedExecutor")


def executor_problems(executors: list[dict[str, Any]]) -> list[str]:
    """One line per executor that sits on a GPU node yet serves on the CPU (each dict: name, node_id,
    node_gpus, and `device` from its ready() report, or `error`)."""
    problems = []
    for e in executors:
        if "error" in e:
            problems.append(f"executor {e['name']} did not report its device: {e['error']}")
        elif e["node_gpus"] > 0 and not str(e["device"]).startswith("cuda"):
            problems.append(f"executor {e['name']} on GPU node {e['node_id'][:12]} ({e['node_gpus']:g} GPU) "
                            f"serves on {e['device']}: it sees no CUDA")
    return problems


def executor_reports(timeout: float) -> list[dict[str, Any]]:
    """Every live StemExecutor: its node's GPU count and the device it serves on."""
    from ray.util.state import list_actors

    gpus = {n["NodeID"]: n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")}
    out = []
    for actor in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000):
        if actor.class_name not in EXECUTOR_CLASSES or not actor.name:
            continue
        report: dict[str, Any] = {"name": actor.name, "node_id": actor.node_id or "", "node_gpus": gpus.get(actor.node_id, 0)}
        try:
            handle = ray.get_actor(actor.name, namespace=actor.ray_namespace)
            report["device"] = ray.get(handle.ready.remote(), timeout=timeout)["device"]
        except Exception as exc:  # noqa: BLE001 - reported as a problem, the check goes on
            report["error"] = f"{type(exc).__name__}: {exc}"[:200]
        out.append(report)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=4, help="probe tasks to run (default 4)")
    parser.add_argument("--gpu-share", type=float, default=0.25, help="num_gpus per task")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait, autoscaling included"
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="do not fail when CUDA is unavailable"
    )
    parser.add_argument(
        "--local-gpus",
        type=int,
        default=0,
        help="start a private local Ray with this many logical GPUs instead of joining a cluster",
    )
    args = parser.parse_args(argv)

    if args.local_gpus:
        ray.init(address="local", num_gpus=args.local_gpus)
    else:
        ray.init()  # on a cluster node: joins the running cluster
    print("cluster resources:", ray.cluster_resources())
    refs = [probe.options(num_gpus=args.gpu_share).remote() for _ in range(args.tasks)]
    results = ray.get(refs, timeout=args.timeout)
    for result in results:
        print(result)
    if not args.allow_cpu and not all(r["cuda"] for r in results):
        print("FAIL: a GPU task could not use CUDA (driver, image or container runtime)")
        return 1
    print(f"OK: {len(results)} tasks of {args.gpu_share} GPU ran")
    executors = executor_reports(args.timeout)
    for report in executors:
        print(report)
    problems = executor_problems(executors)
    for line in problems:
        print(f"FAIL: {line}")
    if problems:
        return 1
    print(f"OK: {len(executors)} running executor(s), none on the CPU of a GPU node")
    return 0


if __name__ == "__main__":
    sys.exit(main())

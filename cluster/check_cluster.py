"""Check a fresh cluster before deploying Stemcell: GPU shares schedule, CUDA works, code imports.

    ray submit cluster/aws-gpu.yaml cluster/check_cluster.py            # on a `ray up` cluster
    python cluster/check_cluster.py --local-gpus 1 --allow-cpu          # try it without a cluster

Runs ``--tasks`` tasks of ``--gpu-share`` GPU each, the way Stemcell packs executors onto one
GPU. On a cluster whose GPU workers start at zero, the pending tasks make the autoscaler launch
a GPU node, so the first run can take several minutes (``--timeout``).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

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
        "STEMCELL_ADMIN_TOKEN set": bool(os.environ.get("STEMCELL_ADMIN_TOKEN")),
    }


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
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Connecting to Ray the same way from every command: an existing cluster if there is one, else local."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import ray

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None, num_gpus: float | None = None, dashboard: bool = False,
               env_vars: Mapping[str, str] | None = None) -> str | None:
    """Join the cluster in RAY_ADDRESS or the one running on this node (e.g. after `ray up`), else start
    a local one; `RAY_ADDRESS=local` (Ray's own spelling) always starts a local one.

    A local instance gets one *logical* GPU when the machine has none, so fractional `num_gpus`
    shares are still scheduled (and fall back to CPU inside the actors) exactly as on a GPU node.
    `env_vars` reach every process the job starts (its runtime_env), and all of a local Ray's
    processes (set before it starts), e.g. Serve's ingress flag (`HttpSection.serve_env`).
    Returns the dashboard's URL when Ray knows one (None when this process had already connected).
    """
    if ray.is_initialized():
        return None
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    address = os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        return _dashboard_url(ray.init(address=address, log_to_driver=True, runtime_env=runtime_env))
    if not address:
        try:  # a node of a running cluster (`ray up` / `ray start`): join it, never start a second one
            return _dashboard_url(ray.init(address="auto", log_to_driver=True, runtime_env=runtime_env))
        except ConnectionError:
            pass
    os.environ.update(env_vars or {})  # inherited by the local Ray's raylet, hence by every worker
    if num_gpus is None:
        import torch

        num_gpus = float(torch.cuda.device_count()) or 1.0
    context = ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                       dashboard_host="127.0.0.1", log_to_driver=True, runtime_env=runtime_env)
    return _dashboard_url(context)


def _dashboard_url(context: object) -> str | None:
    url = getattr(context, "dashboard_url", None)
    return f"http://{url}" if url and not str(url).startswith("http") else url

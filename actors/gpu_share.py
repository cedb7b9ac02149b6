"""Make a fractional GPU share hold: Ray's `num_gpus=0.25` is scheduling bookkeeping only.

Nothing stops an actor holding a quarter of a GPU from filling all of its memory or all of its
SMs (Ray issues 41432, 52915). Every GPU-owning actor therefore does two things:

* inside the process, once, `enforce_share(share)`: `torch.cuda.set_per_process_memory_fraction`,
  so the caching allocator raises OOM past `share` of the device's memory instead of starving the
  neighbours;
* at creation, `actor_options(share, ...)`: `num_gpus=share` for Ray's placement and, where the
  node runs NVIDIA MPS, `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` in the actor's runtime_env so the MPS
  server caps the process's SMs at the same fraction. MPS must be chosen per process before CUDA
  initialises, which is why it is a creation option and not something the actor can set itself.

MPS is used when `STEMCELL_MPS` says so (`1`/`0`), else when the node shows a running MPS control
daemon (`CUDA_MPS_PIPE_DIRECTORY` set, or the default pipe folder exists).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MPS_ENV = "STEMCELL_MPS"  # "1": always set the MPS thread percentage, "0": never, unset: detect
_DEFAULT_MPS_PIPE = Path("/tmp/nvidia-mps")


def mps_detected(environ: Mapping[str, str] = os.environ, default_pipe: Path = _DEFAULT_MPS_PIPE) -> bool:
    """True when this node is configured for MPS (explicit setting first, then the daemon's pipe folder)."""
    setting = environ.get(MPS_ENV, "").strip().lower()
    if setting in {"1", "true", "yes", "on"}:
        return True
    if setting in {"0", "false", "no", "off"}:
        return False
    return bool(environ.get("CUDA_MPS_PIPE_DIRECTORY")) or default_pipe.is_dir()


def mps_thread_percentage(share: float) -> int:
    """MPS takes an integer percentage in [1, 100]; round up so a small share still gets an SM."""
    if not 0 < share:
        raise ValueError(f"an MPS share must be > 0, got {share}")
    return max(1, min(100, math.ceil(round(share * 100, 6))))


def runtime_env_for(share: float, *, mps: bool | None = None) -> dict[str, Any] | None:
    """runtime_env capping the actor's SMs at `share` under MPS; None when MPS is off or share is whole."""
    use_mps = mps_detected() if mps is None else mps
    if not use_mps or share <= 0 or share >= 1:
        return None
    return {"env_vars": {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(mps_thread_percentage(share))}}


def actor_options(share: float, *, gpus_available: bool, mps: bool | None = None, **options: Any) -> dict[str, Any]:
    """`.options(...)` for an actor holding `share` of a GPU.

    `gpus_available=False` (a cluster with no GPU resource at all) asks for no GPU so the actor can
    still be placed; the share is then only passed to the actor (which runs on the CPU).
    A caller's own `runtime_env` is kept, with the MPS variable added to its env_vars.
    """
    out: dict[str, Any] = {**options, "num_gpus": share if gpus_available else 0}
    env = runtime_env_for(share, mps=mps) if gpus_available else None
    if env is not None:
        base = dict(out.get("runtime_env") or {})
        base["env_vars"] = {**base.get("env_vars", {}), **env["env_vars"]}
        out["runtime_env"] = base
    return out


def label_options(node_labels: Mapping[str, str]) -> dict[str, Any]:
    """`.options(...)` that keep an actor on nodes carrying all `node_labels` (none: anywhere)."""
    return {"label_selector": dict(node_labels)} if node_labels else {}


def placement_options(placement: str, node_labels: Mapping[str, str]) -> dict[str, Any]:
    """`.options(...)` that place a GPU-owning actor: `spread` over nodes first (a node loss then takes
    one executor, not all), or `pack` (Ray's default); only on nodes with `node_labels` when given."""
    return {"scheduling_strategy": "SPREAD" if placement == "spread" else "DEFAULT", **label_options(node_labels)}


def enforce_share(share: float) -> bool:
    """Cap this process's CUDA memory at `share` of the device; True when a cap was set.

    A no-op without CUDA or for a whole GPU. A driver that refuses logs a warning rather than
    keeping the actor down: an uncapped actor still serves.
    """
    import torch

    if not (0 < share < 1 and torch.cuda.is_available()):
        return False
    try:
        torch.cuda.set_per_process_memory_fraction(share)
    except (RuntimeError, ValueError) as exc:
        log.warning("could not cap GPU memory at %.2f: %s", share, exc)
        return False
    return True

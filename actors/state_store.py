"""Ray actor shell over :class:`stemcell.state.StateStore` (all logic lives there).

Fault tolerance: the actor restarts forever and Ray retries its calls (at-least-once), which is
safe because every StateStore method is idempotent; a restarted actor re-opens the same SQLite
file, so nothing is lost. The file is on one node's disk, so the actor is pinned to the head
node: a restart elsewhere would open an empty database.
"""
from __future__ import annotations

import os

import ray
from ray.actor import ActorHandle

from stemcell.state import StateStore

ACTOR_NAME = "stemcell-state"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's built-in marker resource of the head node
MAX_CONCURRENCY = 1024  # threads (idle ones cost only memory): one long-poll per ingress replica, plus ordinary calls

StateStoreActor = ray.remote(
    num_cpus=0,  # I/O-bound bookkeeping: must not take a CPU slot from models
    # Threaded: each ingress replica holds one `control_changes` long-poll open (it waits without the
    # store's lock); the other calls still run one at a time under that lock. Bounds the replicas.
    max_concurrency=MAX_CONCURRENCY,
    max_restarts=-1,
    max_task_retries=-1,
    resources={HEAD_NODE_RESOURCE: 0.001},
)(StateStore)


def get_or_create_state_store(
    path: str | os.PathLike[str] | None = None, *, namespace: str = "stemcell"
) -> ActorHandle:
    """Handle to the cluster's single named StateStore actor, creating it on first use.

    Detached so it outlives the driver that created it (``stemcell serve`` returns after
    deploying). ``path`` is resolved on the head node; None means ``~/.stemcell/state.db`` there.
    """
    return StateStoreActor.options(
        name=ACTOR_NAME, namespace=namespace, lifetime="detached", get_if_exists=True
    ).remote(path)

"""The one place Stemcell touches Ray's private API, so a Ray upgrade breaks (at most) this module.

Why private: the Planner must tell an actor that waits for a node (PENDING_CREATION, RESTARTING)
from one that runs, to re-place roles a lost node stranded. Ray's public state API
(`ray.util.state.get_actor`) answers that only through the dashboard's HTTP server, which
deployments may run without (`include_dashboard=False`, minimal installs); the GCS actor table
behind `ray._private.state` is always there. Checked against Ray 2.60.0 (the version pinned here):
`ray._private.state.actors(actor_id=hex)` returns a dict with "State", and
`ActorHandle._actor_id.hex()` is the id it takes. Where either is missing or fails, the state is
unknown (None), and callers treat unknown as running.
"""
from __future__ import annotations

import logging

from ray.actor import ActorHandle

log = logging.getLogger(__name__)


def actor_state(handle: ActorHandle) -> str | None:
    """The GCS's state of the actor behind `handle` ("ALIVE", "PENDING_CREATION", ...); None when unknown."""
    try:
        from ray._private import state  # noqa: PLC0415 - private: imported only where used (module docstring)

        info = state.actors(actor_id=handle._actor_id.hex())  # noqa: SLF001
    except Exception as exc:  # noqa: BLE001 - unknown is not down
        log.debug("actor state unknown: %r", exc)
        return None
    return (info or {}).get("State")

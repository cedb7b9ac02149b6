"""Following the Planner's routes: the one mechanism for "this actor moved, go to its successor".

The Planner replaces an actor make-before-break and publishes which actor serves each role in the
StateStore (`StateStore.routes`). A caller that meets the old actor (it answers `Moved`, or is gone:
`RayActorError`) re-reads the routes and continues on the actor they name. The executor pool and the
learning service both follow moves through this class; actors are compared by name (public API).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import ray
from ray.actor import ActorHandle

from stemcell.control.contracts import Routes

log = logging.getLogger(__name__)

ReadRoutes = Callable[[], Awaitable[Routes]]


class RouteFollower:
    """Reads the published routes and resolves a role's current actor by name."""

    def __init__(self, read: ReadRoutes, namespace: str, poll_s: float = 0.25) -> None:
        self._read = read
        self.namespace = namespace
        self.poll_s = poll_s

    async def routes(self) -> Routes:
        """The routes as published now (raises when the store cannot be read)."""
        return await self._read()

    def find(self, name: str) -> ActorHandle | None:
        """The running actor `name`; None when it is gone (killed by a newer move) or not yet visible."""
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    async def successor(self, role: str, current: str, wait_s: float = 0.0) -> tuple[str, ActorHandle] | None:
        """The actor the routes name for `role` once it is another than `current` and runs, polling up
        to `wait_s` (a route is published once the successor is warm); None when none came."""
        deadline = time.monotonic() + wait_s
        while True:
            name = (await self.routes()).actors.get(role)
            handle = None if name is None or name == current else self.find(name)
            if handle is not None:
                log.info("role %s moved: %s -> %s", role, current, name)
                return name, handle
            if name is None or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll_s)

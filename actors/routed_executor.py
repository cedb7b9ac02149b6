"""The StemExecutor as the ingress and the Planner use it: several requests per call, and draining.

* `infer_many`: several cameras' requests in one actor call (an actor call costs about as much
  as Serve's whole per-request work, so the ingress coalesces). Each item goes through the
  executor's own `infer` (its cross-camera batcher, metrics and errors); a failing item comes
  back as its exception, so one bad camera fails only itself.
* `drain`: make-before-break's last step before the kill. Once draining, new calls are answered
  with `Draining` (the caller re-resolves the role's current actor and retries there) while the
  calls already running finish; `drain` returns when none is left.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import ray

from actors.stem_executor import StemExecutor
from stemcell.control.reallocation import Draining

Item = tuple[str, np.ndarray, list[float] | None]  # (camera, frames (N,H,W,3), timestamps)


class _RoutedExecutor(StemExecutor.__ray_actor_class__):  # type: ignore[name-defined,misc]
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def infer_many(self, items: Sequence[Item]) -> list[list[dict] | BaseException]:
        if self._draining:
            return [Draining("executor is draining; retry on the current one")] * len(items)
        self._in_flight += 1
        self._idle.clear()
        try:
            return await asyncio.gather(*(self.infer(c, f, t) for c, f, t in items), return_exceptions=True)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, timeout_s: float = 30.0) -> dict:
        """Refuse new calls, wait for the running ones; returns whether it emptied in time."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return {"drained": False, "in_flight": self._in_flight}
        return {"drained": True, "in_flight": 0}

    async def draining(self) -> bool:
        return self._draining


RoutedExecutor = ray.remote(_RoutedExecutor)

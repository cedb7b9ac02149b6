"""Applying a planning round's camera changes: the executors first, then the store, as the ingress does.

Batched per round: the executor calls run concurrently and the store commits every change in one
compare-and-set transaction (`StateStore.compare_and_set_cameras`); one commit per camera held the
Planner's lock for ~96 minutes when a first round changed 10,000 cameras. When an admin changed a
camera since the round was planned, the admin's config wins and its executor is set back to it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ray.actor import ActorHandle

from stemcell.control.camera_changes import CameraChange
from stemcell.control.camera_plans import camera_plan
from stemcell.control.contracts import CameraSpec
from stemcell.package.manifest import Manifest

log = logging.getLogger(__name__)


async def _to_executor(executor: ActorHandle | None, actor: str, change: CameraChange) -> Exception | None:
    """Reconfigure the camera on its executor; the error (logged) when that failed."""
    try:
        if executor is None:
            raise LookupError(f"executor {actor} is not running")
        await executor.add_camera.remote(change.camera_id, change.after.apps, change.after.stream_fps)
        return None
    except Exception as exc:  # noqa: BLE001 - one camera's failure must not stop the others
        log.warning("camera %s not reconfigured on %s (%s): %r", change.camera_id, actor, change.describe(), exc)
        return exc


async def _set_back(store: ActorHandle, executor: ActorHandle, change: CameraChange) -> str:
    """The store kept an admin's newer config: the executor must run what the store now says."""
    cam = change.camera_id
    try:
        record = await store.get_camera.remote(cam)
        if record is None:  # removed: the push must not leave it on the executor
            await executor.remove_camera.remote(cam)
        else:
            now = CameraSpec.from_config(cam, record.config)
            await executor.add_camera.remote(cam, now.apps, now.stream_fps)
        log.info("camera %s changed meanwhile; planner change %s dropped", cam, change.describe())
        return "superseded"
    except Exception as exc:  # noqa: BLE001 - logged; the next round compares again
        log.warning("camera %s could not be set back: %r", cam, exc)
        return "failed"


async def push_camera_changes(store: ActorHandle, hosts: Sequence[tuple[str, ActorHandle | None]],
                              manifest: Manifest, changes: Sequence[CameraChange]) -> list[str]:
    """Per change (hosted by `hosts[i]` = (actor name, handle)): 'applied', 'superseded' (an admin's
    change won) or 'failed' (logged; the others go on)."""
    errors = await asyncio.gather(*(_to_executor(h, a, c) for (a, h), c in zip(hosts, changes)))
    pushed = [i for i, e in enumerate(errors) if e is None]
    outcomes = ["failed"] * len(changes)
    if not pushed:
        return outcomes
    try:
        done = await store.compare_and_set_cameras.remote(
            [(changes[i].before, changes[i].after, camera_plan(manifest, changes[i].after)) for i in pushed])
    except Exception as exc:  # noqa: BLE001 - the executors run the change; the next round compares again
        log.warning("%d camera change(s) not committed: %r", len(pushed), exc)
        return outcomes
    for i, ok in zip(pushed, done):
        if ok:
            log.info("camera %s reconfigured on %s: %s", changes[i].camera_id, hosts[i][0], changes[i].describe())
    set_back = [i for i, ok in zip(pushed, done) if not ok]
    results = await asyncio.gather(*(_set_back(store, hosts[i][1], changes[i]) for i in set_back))
    for i, ok in zip(pushed, done):
        outcomes[i] = "applied" if ok else "failed"
    for i, outcome in zip(set_back, results):
        outcomes[i] = outcome
    return outcomes

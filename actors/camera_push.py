"""Applying one Planner camera change: the executor first, then the store, as the ingress does.

The store write is a compare-and-set (`StateStore.compare_and_set_camera`): when an admin changed
the camera since the round was planned, the admin's config wins and the executor is set back to it.
"""
from __future__ import annotations

import logging

from ray.actor import ActorHandle

from stemcell.control.camera_changes import CameraChange
from stemcell.control.camera_plans import camera_plan
from stemcell.control.contracts import CameraSpec
from stemcell.package.manifest import Manifest

log = logging.getLogger(__name__)


async def push_camera_change(store: ActorHandle, executor: ActorHandle | None, actor: str, manifest: Manifest,
                             change: CameraChange) -> str:
    """'applied', 'superseded' (an admin's change won) or 'failed' (logged; the others go on)."""
    cam, after = change.camera_id, change.after
    try:
        if executor is None:
            raise LookupError(f"executor {actor} is not running")
        await executor.add_camera.remote(cam, after.apps, after.stream_fps)
        if await store.compare_and_set_camera.remote(change.before, after, camera_plan(manifest, after)):
            log.info("camera %s reconfigured on %s: %s", cam, actor, change.describe())
            return "applied"
        record = await store.get_camera.remote(cam)  # the executor must run what the store now says
        if record is None:  # removed: the push must not leave it on the executor
            await executor.remove_camera.remote(cam)
        else:
            now = CameraSpec.from_config(cam, record.config)
            await executor.add_camera.remote(cam, now.apps, now.stream_fps)
        log.info("camera %s changed meanwhile; planner change %s dropped", cam, change.describe())
        return "superseded"
    except Exception as exc:  # noqa: BLE001 - one camera's failure must not stop the others
        log.warning("camera %s not reconfigured on %s (%s): %r", cam, actor, change.describe(), exc)
        return "failed"

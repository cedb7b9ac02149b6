"""Executor failover in the ingress's pool: a killed executor's cameras are served by another at once.

Real RoutedExecutor actors on the session's Ray (two slots), the real ExecutorPool: kill the
executor a camera lives on, and the very next frame must be answered by the other executor (no
503 while Ray restarts the dead one), then, once the restarted actor answers, the camera goes home
and the other executor no longer holds it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from app.executors import ExecutorPool
from stemcell.control.contracts import AppRun, CameraSpec
from stemcell.serve_config import ExecutorSection
from tests.helpers.builders import tiny_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NAMESPACE = "stemcell-failover-test"
STORED = CameraSpec("stored", 5.0, (AppRun("car", 0, 5.0),))  # what the registry answers for any camera


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failover")
    tiny_package(root / "pkg", branchpoints=(0,), apps=("car",))
    return root / "pkg"


@pytest.fixture()
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _camera_homed_at(pool: ExecutorPool, index: int) -> str:
    return next(c for c in (f"cam-{i}" for i in range(100)) if pool.index_of(c) == index)


def test_killed_executor_fails_over_then_cameras_go_home(package: Path, loop: asyncio.AbstractEventLoop) -> None:
    async def registry(camera_id: str) -> CameraSpec | None:
        return dataclasses.replace(STORED, camera_id=camera_id)

    config = ExecutorSection(count=2, num_gpus=0.1, num_cpus=0.25, namespace=NAMESPACE, max_wait_ms=1)
    frames = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)

    async def scenario() -> None:
        pool = ExecutorPool(config, str(package), registry, max_queued_frames=64, watch_interval_s=0.2)
        await pool.ready(300)
        camera = _camera_homed_at(pool, 0)
        await pool.add_camera(await registry(camera))
        before = await pool.infer(camera, list(frames), None)
        home, other = (ray.get_actor(pool.name(i), namespace=NAMESPACE) for i in (0, 1))
        try:
            ray.kill(home, no_restart=False)
            during = await pool.infer(camera, list(frames), None)  # no 503: the other slot takes it
            assert pool.guests() == {camera: pool.name(1)}
            assert camera in await other.cameras.remote()
            assert during[0].results == before[0].results  # same package, same scores
            deadline = time.monotonic() + 120
            while pool.guests() and time.monotonic() < deadline:  # the watcher sees the restarted actor
                await asyncio.sleep(0.2)
            assert pool.guests() == {}
            assert camera not in await other.cameras.remote()
            after = await pool.infer(camera, list(frames), None)  # home again (re-registered on demand)
            assert camera in await home.cameras.remote()
            assert after[0].results == before[0].results
        finally:
            await pool.close()
            for handle in (home, other):
                ray.kill(handle, no_restart=True)

    loop.run_until_complete(scenario())

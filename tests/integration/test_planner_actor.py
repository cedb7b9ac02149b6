"""The Planner on local Ray: make-before-break share changes under traffic, durable plan, one real round.

Traffic goes through the ingress's `ExecutorPool` (the code the Serve app runs) straight from the
test's event loop, so the switch is exercised exactly as in production without starting Serve.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from actors.planner import PlannerActor
from actors.state_store import get_or_create_state_store
from actors.teacher_labeler import TeacherLabeler
from app.executors import ExecutorPool
from app.service import StemcellService, read_manifest, read_routes
from stemcell.control.contracts import AppRun, CameraSpec, Routes
from stemcell.control.roles import PLANNER_ACTOR
from stemcell.learning.teachers import ModelTeacherConfig
from stemcell.serve_config import PlannerSection, ServeConfig
from stemcell.world import CLASSES
from tests.helpers.builders import tiny_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NAMESPACE = "stemcell-planner-test"
ROLE = "planner-test-exec-0"
CAMERAS = ("cam-a", "cam-b", "cam-c")
TEACHER, TEACHER_SHARE = "planner-test-teacher", 0.1


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ServeConfig:
    root = tmp_path_factory.mktemp("planner")
    tiny_package(root / "pkg", branchpoints=(3, 6), apps=("car", "person"))
    return ServeConfig.model_validate({
        "package_dir": str(root / "pkg"), "state_path": str(root / "state.db"),
        "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 0.5, "namespace": NAMESPACE,
                      "name_prefix": "planner-test-exec", "max_wait_ms": 2, "coalesce_ms": 1},
        "learning": {"enabled": True, "teacher_name": TEACHER, "teacher_num_gpus": TEACHER_SHARE},
    })


@pytest.fixture(scope="module")
def store(config: ServeConfig):  # noqa: ANN201 - an actor handle
    handle = get_or_create_state_store(str(config.state_path), namespace=NAMESPACE)
    for cam in CAMERAS:
        apps = [{"app": "car", "branchpoint": 3, "fps": 10.0}, {"app": "person", "branchpoint": 6, "fps": 5.0}]
        ray.get(handle.put_camera.remote(cam, {"fps": 10.0, "apps": apps}))
    yield handle
    ray.kill(handle)


@pytest.fixture(scope="module")
def planner(config: ServeConfig, store):  # noqa: ANN001, ANN201
    settings = PlannerSection(window_s=0, grace_s=0.3, total_gpu=1.0, headroom=0.5, warm_timeout_s=60,
                               worker_num_cpus=0.25)
    teacher = TeacherLabeler.options(name=TEACHER, namespace=NAMESPACE, num_cpus=0.25, num_gpus=TEACHER_SHARE).remote(
        share=TEACHER_SHARE, teacher=ModelTeacherConfig(kind="model", package_dir=config.package_dir), classes=CLASSES)
    ray.get(teacher.ready.remote())
    handle = PlannerActor.options(name=PLANNER_ACTOR, namespace=NAMESPACE).remote(config, settings)
    yield handle
    plan = ray.get(handle.current_plan.remote())
    ray.kill(handle, no_restart=True)
    ray.kill(teacher, no_restart=True)
    for actor in plan["routes"].values():
        ray.kill(ray.get_actor(actor, namespace=NAMESPACE), no_restart=True)


async def _stream(pool: ExecutorPool, camera: str, stop: asyncio.Event, log: dict[str, Any]) -> None:
    rng = np.random.default_rng(abs(hash(camera)) % 2**32)
    last = time.perf_counter()
    while not stop.is_set():
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        try:
            results = await pool.infer(camera, [frame], None)
            assert {r.app for r in results[0].results} == {"car", "person"}
            log["ok"] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            log["failed"].append(repr(exc))
        now = time.perf_counter()
        log["max_gap_s"] = max(log["max_gap_s"], now - last)
        last = now
        await asyncio.sleep(0.01)


async def _registry(store, camera: str) -> CameraSpec | None:  # noqa: ANN001
    record = await store.get_camera.remote(camera)
    return None if record is None else CameraSpec.from_config(camera, record.config)


def test_share_changes_under_traffic_fail_no_request(config: ServeConfig, store, planner) -> None:  # noqa: ANN001
    async def main() -> tuple[dict[str, Any], list[list[dict]], dict[str, Any]]:
        pool = ExecutorPool(config.executors, str(config.package_dir), lambda c: _registry(store, c), 256,
                            routes=lambda: read_routes(store), names=await read_routes(store), route_refresh_s=0.2)
        await pool.ready(60)
        for cam in CAMERAS:
            await pool.add_camera(await _registry(store, cam))
        log: dict[str, Any] = {"ok": 0, "failed": [], "max_gap_s": 0.0}
        stop = asyncio.Event()
        streams = [asyncio.create_task(_stream(pool, cam, stop, log)) for cam in CAMERAS]
        await asyncio.sleep(0.5)
        reports = []
        for share in (0.5, 0.25):
            reports.append(await planner.set_shares.remote({ROLE: share}))
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*streams)
        # the ingress's plan code: its own camera section is rewritten, the Planner's kept, the live view shown
        service = StemcellService(config, store, pool, *read_manifest(config.package_dir))
        await service.save_plan()
        return log, reports, await service.plan()

    log, reports, admin_plan = asyncio.run(main())
    assert log["failed"] == [] and log["ok"] > 20, log
    assert [r[0].ok for r in reports] == [True, True]
    assert [r[0].new_actor for r in reports] == [f"{ROLE}-g1", f"{ROLE}-g2"]
    for old in (ROLE, f"{ROLE}-g1"):  # drained and killed, never restarted
        with pytest.raises(ValueError):
            ray.get_actor(old, namespace=NAMESPACE)
    plan = ray.get(planner.current_plan.remote())
    assert plan["roles"][ROLE] == {"kind": "executor", "generation": 2, "share": 0.25, "actor": f"{ROLE}-g2"}
    assert ray.get(store.routes.remote()) == Routes({ROLE: f"{ROLE}-g2"})
    assert admin_plan["planner"]["live"] and admin_plan["planner"]["routes"] == {ROLE: f"{ROLE}-g2"}
    assert set(admin_plan["cameras"]) == set(CAMERAS)


def test_round_plans_every_camera_within_the_gpu(planner) -> None:  # noqa: ANN001
    view = ray.get(planner.replan.remote())
    decision = view["decision"]
    assert set(decision["cameras"]) == set(CAMERAS)
    plannable = 1.0 - 0.5 - TEACHER_SHARE  # the total minus what is left out of planning and the teacher's share
    assert view["teacher"]["share"] == TEACHER_SHARE and view["teacher"]["frames"] == 0
    assert decision["inference_share"] <= plannable + 1e-9
    assert view["last_decision_ms"] is not None and view["last_decision_ms"] > 0
    assert sum(r["share"] for r in view["roles"].values()) <= plannable + 1e-9


def test_retraining_worker_moves_with_its_state(config: ServeConfig, planner, tmp_path: Path) -> None:  # noqa: ANN001
    """Checkpoint (paused) -> new worker with the new share resumes it -> old worker stopped."""
    kwargs = {"package_dir": str(config.package_dir), "persist_dir": str(tmp_path / "versions"), "auto": False}
    ray.get(planner.add_retrain_worker.remote("w0", kwargs, 0.05))
    old = ray.get_actor("retrain-w0", namespace=NAMESPACE)
    ray.get(old.set_camera.remote("cam-a", [AppRun("car", 3, 10.0), AppRun("person", 6, 10.0)]))
    before = ray.get(old.stats.remote())
    [report] = ray.get(planner.set_shares.remote({"retrain-w0": 0.1}))
    assert report.ok and report.new_actor == "retrain-w0-g1", report
    new = ray.get_actor("retrain-w0-g1", namespace=NAMESPACE)
    after = ray.get(new.stats.remote())
    assert after["share"] == 0.1 and set(after["jobs"]) == set(before["jobs"]) == {"cam-a/car", "cam-a/person"}
    assert [j["version"] for j in after["jobs"].values()] == [j["version"] for j in before["jobs"].values()]
    with pytest.raises(ValueError):
        ray.get_actor("retrain-w0", namespace=NAMESPACE)
    assert ray.get(planner.current_plan.remote())["routes"]["retrain-w0"] == "retrain-w0-g1"


def test_restarted_planner_continues_with_the_persisted_plan(planner) -> None:  # noqa: ANN001
    before = ray.get(planner.current_plan.remote())
    old_pid = ray.get(planner.__ray_call__.remote(lambda _: os.getpid()))
    ray.kill(planner, no_restart=False)  # max_restarts=-1: the constructor runs again
    deadline = time.monotonic() + 60
    while True:  # a call may still reach the old process before the kill lands: wait for the new one
        try:
            if ray.get(planner.__ray_call__.remote(lambda _: os.getpid()), timeout=10) != old_pid:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the Planner did not restart within 60 s")
        time.sleep(0.5)
    after = ray.get(planner.current_plan.remote(), timeout=10)
    assert after["roles"] == before["roles"] and after["routes"] == before["routes"]
    assert after["decision"] == before["decision"] and after["rounds"] == 0  # a fresh process, same plan

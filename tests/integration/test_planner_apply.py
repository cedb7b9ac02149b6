"""The Planner pushes Mainstream's per-app choices to the executors and the stored cameras, under traffic.

Cameras are registered through the ingress's service code (`StemcellService.add_camera`, what
`POST /cameras` runs) and frames go through its `ExecutorPool`, straight from the test's event
loop (as in test_planner_actor.py, without starting Serve). The inference budget is far below
what a 10 fps camera costs, so Mainstream must share more / sample less.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from actors.planner import PlannerActor
from actors.state_store import get_or_create_state_store
from app.executors import ExecutorPool
from app.schemas import AddCamera
from app.service import StemcellService, read_manifest, read_routes
from stemcell.control.contracts import ServedApp
from stemcell.control.roles import PLANNER_ACTOR
from stemcell.serve_config import PlannerSection, ServeConfig
from tests.helpers.builders import tiny_package
from tests.integration.test_planner_actor import _registry, _stream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NAMESPACE = "stemcell-planner-apply-test"
FREE, PINNED = "cam-free", "cam-pinned"
EXPENSIVE = [{"app": "car", "branchpoint": 3, "fps": 10.0}, {"app": "person", "branchpoint": 3, "fps": 10.0}]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ServeConfig:
    root = tmp_path_factory.mktemp("planner-apply")
    tiny_package(root / "pkg", branchpoints=(3, 6), apps=("car", "person"))
    return ServeConfig.model_validate({
        "package_dir": str(root / "pkg"), "state_path": str(root / "state.db"),
        "executors": {"count": 1, "num_gpus": 0.001, "num_cpus": 0.5, "namespace": NAMESPACE,
                      "name_prefix": "apply-test-exec", "max_wait_ms": 2, "coalesce_ms": 1},
    })


def _running(apps: tuple[ServedApp, ...]) -> dict[str, tuple[int, float]]:
    """What an executor serves, as (branchpoint, fps) per app."""
    return {a.app: (a.branchpoint, a.fps) for a in apps}


def _app_settings(apps: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    return {a["app"]: (int(a["branchpoint"]), float(a["fps"])) for a in apps}


def test_planner_moves_unpinned_cameras_to_its_choice_under_traffic(config: ServeConfig) -> None:
    store = get_or_create_state_store(str(config.state_path), namespace=NAMESPACE)
    # the whole (tiny) budget is the executor's share already: the round changes configs, not shares
    settings = PlannerSection(window_s=0, total_gpu=0.001, quantum=0.001, floor=0.001, grace_s=0.3)
    planner = PlannerActor.options(name=PLANNER_ACTOR, namespace=NAMESPACE).remote(config,
                                                                                settings)

    async def main() -> dict[str, Any]:
        pool = ExecutorPool(config.executors, str(config.package_dir), lambda c: _registry(store, c), 256,
                            routes=lambda: read_routes(store), names=await read_routes(store), route_refresh_s=0.2)
        await pool.ready(60)
        service = StemcellService(config, store, pool, *read_manifest(config.package_dir))
        await service.start()
        for cam in (FREE, PINNED):  # both at an expensive config the admin asked for: pinned
            await service.add_camera(AddCamera(camera_id=cam, apps=EXPENSIVE, fps=10.0))
        log: dict[str, Any] = {"ok": 0, "failed": [], "max_gap_s": 0.0}
        stop = asyncio.Event()
        streams = [asyncio.create_task(_stream(pool, cam, stop, log)) for cam in (FREE, PINNED)]
        await asyncio.sleep(0.3)
        out: dict[str, Any] = {"pinned_round": await planner.replan.remote()}
        # the admin re-posts FREE with app names only: same config, no longer pinned
        await service.add_camera(AddCamera(camera_id=FREE, apps=["car", "person"]))
        out["round"] = await planner.replan.remote()
        await asyncio.sleep(0.3)  # traffic on the new branches too
        stop.set()
        await asyncio.gather(*streams)
        out |= {"log": log, "running": await pool.handle_for(FREE).cameras.remote(),
                "status": {cam: await service.status(cam) for cam in (FREE, PINNED)},
                "admin_plan": await service.plan(), "stored": await _registry(store, FREE)}
        return out

    try:
        out = asyncio.run(main())
    finally:
        plan = ray.get(planner.current_plan.remote())
        ray.kill(planner, no_restart=True)
        for actor in plan["routes"].values():
            ray.kill(ray.get_actor(actor, namespace=NAMESPACE), no_restart=True)
        ray.kill(store)

    assert out["pinned_round"]["last_camera_changes"] == []  # every app pinned: nothing moves
    decided = out["round"]["decision"]["cameras"][FREE]
    chosen = {app: (c["branchpoint"], c["fps"]) for app, c in decided["apps"].items()}
    assert chosen != _app_settings(EXPENSIVE) and all(fps < 10.0 for _, fps in chosen.values()), chosen
    [change] = out["round"]["last_camera_changes"]
    assert change["camera_id"] == FREE and change["outcome"] == "applied"
    assert out["log"]["failed"] == [] and out["log"]["ok"] > 10, out["log"]
    # the executor runs the choice, the store keeps it (unpinned), status and /admin/plan show it
    assert _running(out["running"][FREE]) == chosen
    stored = out["stored"]
    assert {a.app: (a.branchpoint, a.fps) for a in stored.apps} == chosen and not any(a.pinned for a in stored.apps)
    assert _app_settings(out["status"][FREE]["apps"]) == chosen
    assert _app_settings([{"app": a, **e} for a, e in out["admin_plan"]["cameras"][FREE]["apps"].items()]) == chosen
    # the pinned camera still runs what its admin asked for
    assert _running(out["running"][PINNED]) == _app_settings(EXPENSIVE)
    assert all(a["pinned"] for a in out["status"][PINNED]["apps"])

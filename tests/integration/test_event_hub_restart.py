"""A restarted event hub takes back the events the store still has open and ends them under their own id."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stemcell.events.forward import Observed
from stemcell.serve_config import ServeConfig

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def _eventually(check: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except ray.exceptions.RayActorError:  # restarting
            pass
        time.sleep(0.2)
    return False


def test_event_open_across_a_hub_restart_ends_under_its_id(tmp_path: Path) -> None:
    from actors.event_hub import start_event_hub
    from actors.state_store import get_or_create_state_store

    config = ServeConfig(package_dir=tmp_path / "pkg", state_path=tmp_path / "state.db", app_name="hub-restart",
                         executors={"namespace": "hub-restart-test"}, events={"reorder_s": 0.05})
    store = get_or_create_state_store(str(config.state_path), namespace="hub-restart-test")
    hub = start_event_hub(config)
    try:
        ray.get(hub.observe.remote([Observed("cam", 1.0, ({"app": "car", "event_active": True, "score": 0.8},))]))
        assert _eventually(lambda: len(ray.get(store.open_events.remote())) == 1)
        [started] = ray.get(store.open_events.remote())
        pid = ray.get(hub.__ray_call__.remote(lambda _self: os.getpid()))
        ray.kill(hub, no_restart=False)
        assert _eventually(lambda: ray.get(hub.__ray_call__.remote(lambda _self: os.getpid())) != pid)
        assert ray.get(hub.hub_stats.remote())["open_events"] == 1
        ray.get(hub.observe.remote([Observed("cam", 2.0, ({"app": "car", "event_active": False, "score": 0.1},))]))
        assert _eventually(lambda: not ray.get(store.open_events.remote()))
        [ended] = ray.get(store.query_events.remote(camera_id="cam"))
        assert (ended.event_id, ended.start_ts, ended.end_ts) == (started.event_id, 1.0, 2.0)
    finally:
        ray.kill(hub)
        ray.kill(store)

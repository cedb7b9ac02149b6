"""app.observe: a client that went away is a 499 in the metrics and the log, never a 500; bugs stay 500s."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from ray.exceptions import TaskCancelledError
from starlette.requests import ClientDisconnect

import app.observe
from app.observe import ObserveMiddleware


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    def record_request(self, route: str, status: int, latency_ms: float) -> None:
        assert latency_ms >= 0
        self.requests.append((route, status))


def _observe(inner: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str, int]], BaseException | None]:
    recorder = Recorder()
    monkeypatch.setattr(app.observe, "metrics", lambda: recorder)
    scope = {"type": "http", "method": "POST", "path": "/cameras/c/frames", "stemcell.route": "/cameras/{camera_id}/frames"}

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(_: dict[str, Any]) -> None:
        pass

    try:
        asyncio.run(ObserveMiddleware(inner)(scope, receive, send))
    except BaseException as exc:  # noqa: BLE001 - what the middleware lets through is part of the answer
        return recorder.requests, exc
    return recorder.requests, None


def _raising(exc: BaseException) -> Any:
    async def inner(*_: Any) -> None:
        raise exc
    return inner


@pytest.mark.parametrize("gone", [ClientDisconnect(), TaskCancelledError()])
def test_a_client_that_left_is_499_and_nothing_is_raised(gone: BaseException, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="stemcell.serve"):
        recorded, raised = _observe(_raising(gone), monkeypatch)
    assert recorded == [("/cameras/{camera_id}/frames", 499)] and raised is None
    assert "-> 499" in caplog.text and "500" not in caplog.text and "Traceback" not in caplog.text


def test_a_cancelled_request_is_499_and_stays_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    async def cancelled(*_: Any) -> None:
        raise asyncio.CancelledError

    recorded, raised = _observe(cancelled, monkeypatch)
    assert recorded == [("/cameras/{camera_id}/frames", 499)] and isinstance(raised, asyncio.CancelledError)


def test_a_bug_is_still_a_500(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    recorded, raised = _observe(_raising(KeyError("bug")), monkeypatch)
    assert recorded == [("/cameras/{camera_id}/frames", 500)] and isinstance(raised, KeyError)
    assert "failed" in caplog.text

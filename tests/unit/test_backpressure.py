"""app.backpressure: the frame routes' door answers 503 + Retry-After itself, at once or at the deadline."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.backpressure import ROUTE_KEY, AdmissionMiddleware, FrameDoor
from stemcell.admission import AdmissionGate, derive_limits


def _gate(answer_within_s: float = 2.0) -> AdmissionGate:
    return AdmissionGate(derive_limits(4, 1, 2), answer_within_s=answer_within_s, retry_after_s=1)


def _call(app: Any, gate: AdmissionGate | None, path: str, method: str = "POST",
          handlers: dict[str, Any] | None = None, root_path: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    door = None if gate is None else FrameDoor(gate, handlers or {})
    middleware = AdmissionMiddleware(app, door=lambda: door)
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": [], "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent, scope


async def _ok(_scope: Any, _receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_admitted_requests_pass_and_are_counted_as_completions() -> None:
    gate = _gate()
    sent, scope = _call(_ok, gate, "/cameras/c1/frames")
    assert sent[0]["status"] == 200 and gate.inside == 0 and scope[ROUTE_KEY] == "/cameras/{camera_id}/frames"
    sent, scope = _call(_ok, gate, "/prefix/cameras/c1/frames:batch", root_path="/prefix")
    assert sent[0]["status"] == 200 and scope[ROUTE_KEY] == "/cameras/{camera_id}/frames:batch"


def test_frame_requests_go_straight_to_the_replicas_handler() -> None:
    seen: list[str] = []

    async def frames(camera_id: str, request: Request) -> JSONResponse:
        seen.append(camera_id)
        assert request.method == "POST"
        if camera_id == "bad id":
            raise HTTPException(400, "bad camera id", headers={"X-Why": "id"})
        return JSONResponse({"camera_id": camera_id})

    async def not_for_frames(*_: Any) -> None:
        raise AssertionError("frame requests must not go through FastAPI's routing")

    gate = _gate()
    handlers = {"/cameras/{camera_id}/frames": frames}
    sent, _ = _call(not_for_frames, gate, "/cameras/cam-7/frames", handlers=handlers)
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"camera_id": "cam-7"}
    sent, _ = _call(not_for_frames, gate, "/cameras/bad id/frames", handlers=handlers)
    assert sent[0]["status"] == 400 and (b"x-why", b"id") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"detail": "bad camera id"}
    assert seen == ["cam-7", "bad id"] and gate.inside == 0
    sent, _ = _call(_ok, gate, "/other/cameras/c1/frames")  # not a route: FastAPI answers
    assert sent[0]["status"] == 200 and seen == ["cam-7", "bad id"]


def test_a_full_replica_refuses_at_the_door_without_calling_the_app() -> None:
    gate = _gate()
    gate.inside = gate.limits.cold_frame_requests  # no rate known yet: one batch is all it takes in

    async def never(*_: Any) -> None:
        raise AssertionError("the app must not run for a refused request")

    sent, _ = _call(never, gate, "/cameras/c1/frames")
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503 and headers[b"retry-after"] == b"2"
    assert "overloaded" in json.loads(sent[1]["body"])["detail"]
    assert gate.inside == gate.limits.cold_frame_requests  # unchanged: the refused request never entered


def test_a_request_past_its_deadline_is_answered_503_and_leaves() -> None:
    gate = _gate(answer_within_s=0.05)

    async def stuck(*_: Any) -> None:
        await asyncio.sleep(10)

    sent, _ = _call(stuck, gate, "/cameras/c1/frames")
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[b"retry-after"] == b"1"
    assert "not answered within" in json.loads(sent[1]["body"])["detail"] and gate.inside == 0


def test_other_routes_and_methods_pass_untouched() -> None:
    gate = _gate()
    gate.inside = 10_000  # would refuse any frame request
    for path, method in [("/cameras/c1/status", "GET"), ("/admin/cameras", "POST"), ("/cameras/c1/frames", "GET")]:
        sent, scope = _call(_ok, gate, path, method)
        assert sent[0]["status"] == 200 and ROUTE_KEY not in scope
    sent, _ = _call(_ok, None, "/cameras/c1/frames")  # no gate yet (replica starting)
    assert sent[0]["status"] == 200

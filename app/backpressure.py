"""The door of the two frame routes: a fast path, and Stemcell's own 503 + Retry-After in time.

A pure ASGI middleware in front of `POST /cameras/{id}/frames` and `POST /cameras/{id}/frames:batch`,
holding the replica's `stemcell.admission.AdmissionGate`:

* a request the gate refuses is answered at once, before its body is read: 503, `Retry-After`, a JSON
  `detail`;
* an admitted request still running at its deadline (`DEADLINE_SHARE` of `limits.answer_within_s`,
  the rest is left for the proxy and the network) is cancelled and answered the same way, so no
  request waits on a queue longer than the budget whatever the estimate said;
* an admitted request goes straight to the replica's handler (the same method FastAPI documents),
  without FastAPI's routing, dependency solving and parameter validation: profiled, those were about
  half of the ingress's CPU per frame (README, "Under overload").

Every other route passes through untouched.  The middleware asks `door()` for the replica's
`FrameDoor` on each request (Serve serves a frozen copy of the FastAPI app, so the replica cannot
hand it over through the app object); until the replica has one, everything passes.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stemcell.admission import AdmissionGate

FRAME_ROUTES = {"": "/cameras/{camera_id}/frames", ":batch": "/cameras/{camera_id}/frames:batch"}
_FRAME_PATH = re.compile(r"/cameras/([^/]+)/frames(:batch)?")
FrameHandler = Callable[[str, Request], Awaitable[Response]]  # (camera_id, request) -> response


@dataclass(frozen=True)
class FrameDoor:
    """What one replica's door needs: its gate, and the handler of each frame route (by template)."""

    gate: AdmissionGate
    handlers: dict[str, FrameHandler] = field(default_factory=dict)  # missing: FastAPI routes the request
DEADLINE_SHARE = 0.6  # of answer_within_s, spent at most inside the replica
ROUTE_KEY = "stemcell.route"  # scope key naming the route template of a request answered here


async def answer_503(send: Send, retry_after_s: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after_s).encode())]})
    await send({"type": "http.response.body", "body": body})


class StatusSend:
    """An ASGI `send` that remembers the status of the response it started (0 until one starts)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def _frame_route(scope: Scope) -> tuple[str, str] | None:
    """(route template, camera id) of a frame request, None for anything else."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path, root = scope.get("path", ""), scope.get("root_path", "")
    match = _FRAME_PATH.fullmatch(path[len(root):] if root and path.startswith(root) else path)
    return None if match is None else (FRAME_ROUTES[match.group(2) or ""], match.group(1))


async def _direct(handler: FrameHandler, camera_id: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Run a frame handler as FastAPI would, minus routing and validation (it checks its inputs itself)."""
    request = Request(scope, receive)
    try:
        response = await handler(camera_id, request)
    except HTTPException as exc:
        response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    await response(scope, receive, send)


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, door: Callable[[], FrameDoor | None]) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _frame_route(scope)
        door = self.door() if route is not None else None
        if door is None:
            await self.app(scope, receive, send)
            return
        gate = door.gate
        scope[ROUTE_KEY], camera_id = route
        retry_after = gate.enter()
        if retry_after is not None:
            await answer_503(send, retry_after, f"overloaded: {gate.inside} frame requests in this replica; "
                                                f"retry after {retry_after} s")
            return
        handler = door.handlers.get(scope[ROUTE_KEY])
        tracked = StatusSend(send)
        budget = DEADLINE_SHARE * gate.answer_within_s
        try:
            async with asyncio.timeout(budget) as deadline:
                if handler is None:
                    await self.app(scope, receive, tracked)
                else:
                    await _direct(handler, camera_id, scope, receive, tracked)
        except TimeoutError:
            if not deadline.expired():
                raise
            if tracked.status == 0:  # nothing sent yet: the client still gets a proper refusal
                await answer_503(tracked, gate.refuse(), f"not answered within {budget:.1f} s (overloaded); "
                                                              "retry later")
        finally:
            gate.leave(completed=tracked.status == 200)

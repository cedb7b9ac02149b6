"""The door of the two frame routes: Stemcell's own 503 + Retry-After, in time, instead of Serve's or a time-out.

A pure ASGI middleware (no FastAPI routing, no body read) in front of `POST /cameras/{id}/frames`
and `POST /cameras/{id}/frames:batch`, holding the replica's `stemcell.admission.AdmissionGate`:

* a request the gate refuses is answered at once: 503, `Retry-After`, a JSON `detail`;
* an admitted request still running at its deadline (`DEADLINE_SHARE` of `limits.answer_within_s`,
  the rest is left for the proxy and the network) is cancelled and answered the same way, so no
  request waits on a queue longer than the budget whatever the estimate said.

Every other route passes through untouched.  The replica puts its gate in the app's state
(`app.state.admission_gate`) once its limits are known; until then everything passes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stemcell.admission import AdmissionGate

log = logging.getLogger("stemcell.serve")

FRAME_ROUTES = {"": "/cameras/{camera_id}/frames", ":batch": "/cameras/{camera_id}/frames:batch"}
_FRAME_PATH = re.compile(r"/cameras/[^/]+/frames(:batch)?$")
DEADLINE_SHARE = 0.8  # of answer_within_s, spent at most inside the replica
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


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate: AdmissionGate | None = getattr(getattr(scope.get("app"), "state", None), "admission_gate", None)
        match = _FRAME_PATH.search(scope.get("path", "")) if scope["type"] == "http" else None
        if gate is None or match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = FRAME_ROUTES[match.group(1) or ""]
        retry_after = gate.enter()
        if retry_after is not None:
            await answer_503(send, retry_after, f"overloaded: {gate.inside} frame requests in this replica; "
                                                f"retry after {retry_after} s")
            return
        tracked = StatusSend(send)
        budget = DEADLINE_SHARE * gate.answer_within_s
        try:
            async with asyncio.timeout(budget) as deadline:
                await self.app(scope, receive, tracked)
        except TimeoutError:
            if not deadline.expired():
                raise
            if tracked.status == 0:  # nothing sent yet: the client still gets a proper refusal
                await answer_503(tracked, gate.retry_after(), f"not answered within {budget:.1f} s (overloaded); "
                                                              "retry later")
        finally:
            gate.leave(completed=tracked.status == 200)


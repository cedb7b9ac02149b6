"""HTTP routes of events and webhooks, mixed into the ingress (`StemcellIngress(EventRoutes)`).

Serve binds these methods like the ingress's own (it walks the class's MRO), so they share its auth
helpers and its `EventForwarder` (`self.events`, whose `hub` is the one event hub that tracks every
camera and delivers every webhook: its counters are the cluster's). The SSE stream follows the StateStore (`events_after(seq)`), not this
replica's tracker: events found by any replica (or a pull ingest) reach every stream.
"""
import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.images import json_body, openapi_json_body
from stemcell.events import Event, WebhookSpec, check_target
from stemcell.events.webhooks import DeliveryStats

router = APIRouter()
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


class EventList(BaseModel):
    events: list[Event] = Field(description="newest start first; end_ts is null while the event lasts")


class WebhookIn(BaseModel):
    model_config = {"extra": "forbid"}
    url: str = Field(max_length=2048, description="http(s) URL that receives POSTed JSON")
    secret: str = Field(min_length=16, max_length=256, description="HMAC-SHA256 key of X-Stemcell-Signature")
    apps: list[str] = Field(default_factory=list, max_length=64, description="only these apps (empty: all)")
    cameras: list[str] = Field(default_factory=list, max_length=1000, description="only these cameras (empty: all)")


class WebhookStats(BaseModel):
    delivered: int
    failed: int = Field(description="deliveries that failed every attempt")
    overflow: int = Field(description="deliveries dropped because the webhook's queue was full")
    retries: int
    pending: int
    last_error: str | None


class WebhookOut(BaseModel):
    webhook_id: str
    url: str
    apps: list[str]
    cameras: list[str]
    stats: WebhookStats = Field(description="delivery counters of the event hub (every camera's events)")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


def _window(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and until < since:
        raise HTTPException(422, f"until ({until}) is before since ({since})")


def _sse(seq: int, event: Event) -> str:
    kind = "event.start" if event.end_ts is None else "event.end"
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(event.as_dict(), sort_keys=True)}\n\n"


class EventRoutes:
    """Routes only; tracking and delivery live in the event hub (`actors.event_hub`, `self.events.hub`)."""

    @staticmethod
    def _webhook_out(spec: WebhookSpec, stats: Mapping[str, DeliveryStats]) -> dict[str, Any]:
        return {"webhook_id": spec.webhook_id, "url": spec.url, "apps": list(spec.apps), "cameras": list(spec.cameras),
                "stats": stats.get(spec.webhook_id, DeliveryStats()).as_dict()}

    @router.get("/cameras/{camera_id}/events", tags=["events"], response_model=EventList)
    async def camera_events(self, camera_id: str, request: Request,
                            since: float | None = Query(None, description="unix seconds: events still open at or after"),
                            until: float | None = Query(None, description="unix seconds: events started at or before"),
                            app: str | None = Query(None, pattern=_ID), limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """This camera's events (camera token or admin token)."""
        await self._require_camera(request, camera_id)
        _window(since, until)
        return {"events": await self.service.store.query_events.remote(camera_id, app, since, until, limit)}

    @router.get("/admin/events", tags=["events"], response_model=EventList)
    async def admin_events(self, request: Request, camera: str | None = Query(None, pattern=_ID),
                           app: str | None = Query(None, pattern=_ID), since: float | None = None,
                           until: float | None = None, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Events of every camera (admin), filtered by camera, app and time."""
        self._require_admin(request)
        _window(since, until)
        return {"events": await self.service.store.query_events.remote(camera, app, since, until, limit)}

    @router.get("/admin/events:stream", tags=["events"], response_class=StreamingResponse, responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events: `event: event.start|event.end`, "
              "`id:` the change's seq, `data:` the event as JSON"}})
    async def event_stream(self, request: Request, after: int | None = Query(
            None, ge=0, description="replay changes after this seq (default: only new ones; the Last-Event-ID "
            "header does the same on reconnect)")) -> StreamingResponse:
        """Event starts and ends as they happen (admin)."""
        self._require_admin(request)
        last_id = request.headers.get("last-event-id", "")
        store = self.service.store
        seq = after if after is not None else int(last_id) if last_id.isdigit() else await store.last_event_seq.remote()
        poll_s = self.config.events.stream_poll_s

        async def stream() -> AsyncIterator[str]:
            nonlocal seq
            yield ": stemcell events\n\n"
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                changes = await store.events_after.remote(seq)
                for seq, event in changes:
                    yield _sse(seq, event)
                if changes:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > HEARTBEAT_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.post("/admin/webhooks", status_code=201, tags=["webhooks"], response_model=WebhookOut,
                 openapi_extra=openapi_json_body(WebhookIn))
    async def add_webhook(self, request: Request) -> dict[str, Any]:
        """Register a webhook: every event start and end (of the chosen apps and cameras) is POSTed to `url`
        as JSON signed in `X-Stemcell-Signature: sha256=<HMAC-SHA256(secret, body) hex>`."""
        self._require_admin(request)
        body = await json_body(request, WebhookIn)
        try:
            url = await asyncio.to_thread(check_target, body.url, self.config.webhooks.allow_private)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        spec = WebhookSpec(secrets.token_hex(8), url, body.secret, tuple(body.apps), tuple(body.cameras))
        await self.service.store.put_webhook.remote(spec)
        await self.events.hub.refresh_webhooks.remote()
        return self._webhook_out(spec, {})

    @router.get("/admin/webhooks", tags=["webhooks"], response_model=WebhookList)
    async def list_webhooks(self, request: Request) -> dict[str, Any]:
        """Registered webhooks (secrets are never shown) with their delivery counters (all cameras)."""
        self._require_admin(request)
        stats = await self.events.hub.webhook_stats.remote()
        return {"webhooks": [self._webhook_out(s, stats) for s in await self.service.store.list_webhooks.remote()]}

    @router.delete("/admin/webhooks/{webhook_id}", tags=["webhooks"], responses={404: {"description": "no such webhook"}})
    async def delete_webhook(self, webhook_id: str, request: Request) -> dict[str, Any]:
        """Stop delivering to a webhook (at once: the event hub re-reads the list)."""
        self._require_admin(request)
        if not await self.service.store.delete_webhook.remote(webhook_id):
            raise HTTPException(404, f"unknown webhook {webhook_id!r}")
        await self.events.hub.refresh_webhooks.remote()
        return {"webhook_id": webhook_id, "removed": True}

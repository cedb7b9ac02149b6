"""One metrics sample and one log line per HTTP request (the ingress's outermost middleware)."""
from __future__ import annotations

import asyncio
import logging
import time

from ray.exceptions import TaskCancelledError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app.backpressure import ROUTE_KEY, StatusSend
from app.metrics import metrics

log = logging.getLogger("stemcell.serve")

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first": no answer went out


class ObserveMiddleware:
    """One metrics sample and one log line per request (pure ASGI: Starlette's BaseHTTPMiddleware
    runs every request through an extra task group, measurably slower at hundreds of requests/s).

    A client that goes away mid-request is the client's doing, not a server error: status 499, like
    any 4xx. Serve shows it three ways: `ClientDisconnect` while the body is read, the body's
    `receive` raising `TaskCancelledError` (Serve cancelled the task that fetches it), or the request
    itself cancelled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = StatusSend(send)
        status = 500  # unless a response starts (or the client left first)
        try:
            await self.app(scope, receive, observed)
        except (ClientDisconnect, TaskCancelledError):  # nobody is left to answer
            status = CLIENT_CLOSED
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception:  # a bug, not bad input: the exception handler below answers a JSON 500
            log.exception("%s %s failed", scope["method"], scope["path"])
            raise
        finally:
            status = observed.status or status
            template = getattr(scope.get("route"), "path", None) or scope.get(ROUTE_KEY, "unmatched")
            ms = (time.perf_counter() - started) * 1000.0
            metrics().record_request(template, status, ms)
            log.log(logging.WARNING if status >= 400 else logging.DEBUG,
                    "%s %s -> %d in %.1f ms", scope["method"], template, status, ms)

"""Webhooks: target checks, HMAC-SHA256 signatures, and delivery that never waits on a receiver.

Each webhook has its own bounded queue and one sender thread. `publish` only enqueues (a full queue
drops the delivery and counts it as overflow), so a slow or dead receiver delays nobody but itself:
inference answers no later than without webhooks. Failed posts are retried with capped exponential
backoff up to `max_attempts`, then counted as failed.

The target is checked twice: when registered, and again at every delivery (`pinned_post`), because
a name that resolved to a public address at registration may resolve to 127.0.0.1 or the cloud's
metadata address later (DNS rebinding). The delivery resolves the host, refuses a private answer
(unless `webhooks.allow_private`) and connects to exactly the address it checked, so no second
lookup can swap it; redirects are not followed (a public receiver cannot bounce a post inward).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from stemcell.events.tracker import EventChange

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Stemcell-Signature"
Resolver = Callable[[str], list[str]]  # host -> its IP addresses


def _resolve(host: str) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})


class RefusedTarget(ValueError):
    """A webhook host that resolves to an address it may not post to (not retried: it is a policy answer)."""


def _allowed_addresses(host: str, allow_private: bool, resolve: Resolver) -> list[str]:
    """The host's addresses; `RefusedTarget` when any is loopback, private, link-local or multicast
    (unless `allow_private`), ValueError when it does not resolve."""
    try:
        addresses = resolve(host)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"webhook host {host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise ValueError(f"webhook host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not ip.is_global or ip.is_multicast:
                raise RefusedTarget(f"webhook host {host!r} is a private or loopback address ({ip}); "
                                    "set webhooks.allow_private: true to allow it")
    return addresses


def check_target(url: str, allow_private: bool, resolve: Resolver = _resolve) -> str:
    """The URL when a webhook may post to it; ValueError naming the problem otherwise.

    http(s) only; a host that resolves to a loopback, private, link-local or otherwise non-public address
    is refused unless `allow_private` (a webhook must not become a way to reach the cluster's insides).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook url must be http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"webhook url has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"webhook url has a bad port: {url!r}") from exc
    _allowed_addresses(parts.hostname, allow_private, resolve)
    return url


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact body bytes with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def event_body(change: EventChange) -> bytes:
    """The delivered JSON: `{"type": "event.start"|"event.end", "event": {...}}` (compact, sorted keys)."""
    return json.dumps({"type": f"event.{change.kind}", "event": change.event.as_dict()},
                      sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class WebhookSpec:
    """A registered webhook (the store keeps these; the secret never leaves the server again)."""

    webhook_id: str
    url: str
    secret: str
    apps: tuple[str, ...] = ()  # empty: every app
    cameras: tuple[str, ...] = ()  # empty: every camera

    def wants(self, change: EventChange) -> bool:
        return ((not self.apps or change.event.app in self.apps)
                and (not self.cameras or change.event.camera_id in self.cameras))


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try (webhooks section of serve.yaml)."""

    queue_size: int = 1000  # deliveries waiting per webhook; beyond: dropped and counted as overflow
    max_attempts: int = 5  # posts per delivery before it counts as failed
    backoff_s: float = 0.5  # wait after the first failure, doubled each retry
    backoff_max_s: float = 30.0
    timeout_s: float = 5.0  # one POST
    allow_private: bool = False  # deliveries to loopback/private addresses (re-checked at each delivery)


Post = Callable[[str, bytes, dict[str, str], float], int]  # url, body, headers, timeout -> HTTP status


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to `host` (its Host header) over a socket to the one `address` already checked."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS likewise; the certificate is still verified against the host's name (SNI too)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def pinned_post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, *, allow_private: bool = False,
                resolve: Resolver = _resolve) -> int:
    """POST `body` to `url` after re-checking where its host points now; returns the HTTP status.

    Raises `RefusedTarget` when the host resolves to a refused address, OSError when unreachable."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget(f"webhook url must be http(s) with a host, got {url!r}")
    address = _allowed_addresses(parts.hostname, allow_private, resolve)[0]
    https = parts.scheme == "https"
    kind = _PinnedHTTPS if https else _PinnedHTTP
    conn = kind(parts.hostname, parts.port or (443 if https else 80), address, timeout_s)
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@dataclass(frozen=True)
class DeliveryStats:
    """One webhook's delivery counters (what `GET /admin/webhooks` shows)."""

    delivered: int = 0
    failed: int = 0  # deliveries that failed every attempt (or were refused at delivery)
    overflow: int = 0  # deliveries dropped because the queue was full
    retries: int = 0
    pending: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Counters:
    delivered: int = 0
    failed: int = 0
    overflow: int = 0
    retries: int = 0
    last_error: str | None = None


class WebhookSender:
    """One webhook's queue and sender thread."""

    def __init__(self, spec: WebhookSpec, policy: DeliveryPolicy, post: Post | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.policy, self._sleep = spec, policy, sleep
        self._post = post or functools.partial(pinned_post, allow_private=policy.allow_private)
        self._queue: queue.Queue[tuple[bytes, str] | None] = queue.Queue(maxsize=policy.queue_size)
        self.counters = _Counters()
        self._thread = threading.Thread(target=self._run, name=f"webhook-{spec.webhook_id}", daemon=True)
        self._thread.start()

    def submit(self, body: bytes, kind: str) -> bool:
        """Enqueue without waiting; False (and one more overflow) when the queue is full."""
        try:
            self._queue.put_nowait((body, kind))
            return True
        except queue.Full:
            self.counters.overflow += 1
            return False

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # the thread is a daemon: it ends with the process
            pass

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._deliver(*item)

    def _deliver(self, body: bytes, kind: str) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.spec.secret),
                   "X-Stemcell-Event": kind, "User-Agent": "stemcell-webhook"}
        wait = self.policy.backoff_s
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                status = self._post(self.spec.url, body, headers, self.policy.timeout_s)
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except RefusedTarget as exc:  # the host points inward now: no retry can make that right
                self.counters.last_error, self.counters.failed = str(exc)[:300], self.counters.failed + 1
                log.warning("webhook %s: delivery refused: %s", self.spec.webhook_id, exc)
                return
            except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, reset, bad answer
                error = f"{type(exc).__name__}: {exc}"[:300]
            if error is None:
                self.counters.delivered += 1
                return
            self.counters.last_error = error
            if attempt < self.policy.max_attempts:
                self.counters.retries += 1
                self._sleep(wait)
                wait = min(wait * 2, self.policy.backoff_max_s)
        self.counters.failed += 1
        log.warning("webhook %s: delivery failed after %d attempts: %s", self.spec.webhook_id,
                    self.policy.max_attempts, self.counters.last_error)


class WebhookDispatcher:
    """The webhooks one process delivers to; `sync` follows the stored list, `publish` fans out."""

    def __init__(self, policy: DeliveryPolicy, post: Post | None = None) -> None:
        self.policy, self._post = policy, post
        self._senders: dict[str, WebhookSender] = {}

    def sync(self, specs: Iterable[WebhookSpec]) -> None:
        """Start senders for new (or changed) webhooks, stop those no longer registered."""
        wanted = {s.webhook_id: s for s in specs}
        for webhook_id in list(self._senders):
            if wanted.get(webhook_id) != self._senders[webhook_id].spec:
                self._senders.pop(webhook_id).stop()
        for webhook_id, spec in wanted.items():
            if webhook_id not in self._senders:
                self._senders[webhook_id] = WebhookSender(spec, self.policy, self._post)

    def publish(self, changes: Iterable[EventChange]) -> int:
        """Enqueue each change for every webhook that wants it; returns how many were enqueued."""
        sent = 0
        for change in changes:
            body = None
            for sender in self._senders.values():
                if sender.spec.wants(change):
                    body = body or event_body(change)
                    sent += sender.submit(body, f"event.{change.kind}")
        return sent

    def webhook_ids(self) -> list[str]:
        return list(self._senders)

    def stats(self, webhook_id: str) -> DeliveryStats:
        """This process's delivery counters for one webhook (zeros when it has no sender here yet)."""
        sender = self._senders.get(webhook_id)
        if sender is None:
            return DeliveryStats()
        c = sender.counters
        return DeliveryStats(c.delivered, c.failed, c.overflow, c.retries, sender.pending(), c.last_error)

    def close(self) -> None:
        for sender in self._senders.values():
            sender.stop()
        self._senders.clear()

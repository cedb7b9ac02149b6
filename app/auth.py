"""Bearer-token checks for the HTTP layer, in the replica.

Camera tokens are stored as a keyed HMAC (`stemcell.state.tokens`); each replica holds the key and
every camera's MAC, pushed by the store (`stemcell.state.control`), so a check never waits on the
store, and a rotated or revoked token is refused by every replica as soon as the change arrives
(milliseconds), not after a cache's time-to-live. All comparisons are `hmac.compare_digest`:
constant time, whatever the input length.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from stemcell.control.contracts import Routes
from stemcell.state.control import ControlDelta, ControlSnapshot, ControlTable
from stemcell.state.tokens import MAX_TOKEN_CHARS

log = logging.getLogger(__name__)


class AuthError(Exception):
    """401 (no usable credentials) or 403 (credentials that do not open this route)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthError(401) otherwise."""
    if not header:
        raise AuthError(401, "missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS or " " in token:
        raise AuthError(401, "malformed Authorization header (expected 'Bearer <token>')")
    return token


def is_admin(token: str, admin_digest: bytes) -> bool:
    return hmac.compare_digest(digest(token), admin_digest)


class CameraTokens:
    """The replica's copy of every camera's token MAC and the routes, kept current by the store's feed.

    `start` loads the snapshot once; a background task then long-polls `changes` and applies each
    delta (a token set, rotated or revoked; a route moved), reloading the snapshot when the feed asks
    (a gap, a restarted store). A check is one HMAC and a constant-time compare here (microseconds),
    never a store call, except for a token still stored as a legacy scrypt hash, which the store
    checks (and rewrites as an HMAC, which then arrives through the feed).
    """

    def __init__(self, snapshot: Callable[[], Awaitable[ControlSnapshot]],
                 changes: Callable[[str, int, float], Awaitable[ControlDelta]],
                 verify_legacy: Callable[[str, str], Awaitable[bool]], *, wait_s: float = 10.0,
                 retry_s: float = 1.0) -> None:
        self._snapshot, self._changes, self._verify_legacy = snapshot, changes, verify_legacy
        self._wait_s, self._retry_s = wait_s, retry_s
        self.table = ControlTable()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.table.load(await self._snapshot())
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                await self.sync(self._wait_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store restarts: keep the table, ask again
                log.warning("control feed unavailable (%r); retrying in %.1f s", exc, self._retry_s)
                await asyncio.sleep(self._retry_s)

    async def sync(self, wait_s: float = 0.0) -> None:
        """Apply what changed since this replica's version (waiting up to `wait_s` for a change); the
        admin routes call it after a write so this replica sees its own write at once."""
        if not self.table.apply(await self._changes(self.table.epoch, self.table.version, wait_s)):
            self.table.load(await self._snapshot())

    async def check(self, camera_id: str, token: str) -> bool:
        """True iff `token` is `camera_id`'s token."""
        local = self.table.check_token(camera_id, token)
        return local if local is not None else await self._verify_legacy(camera_id, token)

    def routes(self) -> Routes:
        """Role -> serving actor, as last pushed."""
        return self.table.routes()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

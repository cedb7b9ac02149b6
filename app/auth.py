"""Bearer-token checks for the HTTP layer.

Camera tokens are stored as slow salted hashes (scrypt, ~90 ms per check, see
`stemcell.state.tokens`): right for a leaked database, wrong for every frame.  So a replica
remembers, per camera, a fast digest of the token that last verified and accepts it for
`ttl_s`; a rotated or revoked token stops working on this replica at once (the admin route calls
`forget`) and on other replicas within `ttl_s`.  Wrong tokens are remembered briefly too, so a
misconfigured camera retrying in a loop does not turn each retry into a scrypt run.
All comparisons are `hmac.compare_digest` on digests: constant time, whatever the input length.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stemcell.state.tokens import MAX_TOKEN_CHARS


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


@dataclass
class _Entry:
    token_digest: bytes
    expires: float


class CameraTokenCache:
    """Accept a camera's token without re-running scrypt while a recent check vouches for it."""

    def __init__(self, verify: Callable[[str, str], Awaitable[bool]], *, ttl_s: float = 30.0,
                 negative_ttl_s: float = 2.0, max_negative: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._verify = verify
        self._ttl, self._negative_ttl, self._max_negative = ttl_s, negative_ttl_s, max_negative
        self._clock = clock
        self._good: dict[str, _Entry] = {}
        self._bad: OrderedDict[bytes, float] = OrderedDict()

    async def check(self, camera_id: str, token: str) -> bool:
        """True iff `token` is `camera_id`'s token (cached, or verified against the store now)."""
        now = self._clock()
        token_digest = digest(token)
        entry = self._good.get(camera_id)
        if entry is not None and entry.expires > now and hmac.compare_digest(entry.token_digest, token_digest):
            return True
        bad_key = digest(camera_id + "\x00" + token)
        if self._bad.get(bad_key, 0.0) > now:
            return False
        if await self._verify(camera_id, token):
            self._good[camera_id] = _Entry(token_digest, now + self._ttl)
            return True
        self._bad[bad_key] = now + self._negative_ttl
        self._bad.move_to_end(bad_key)
        while len(self._bad) > self._max_negative:
            self._bad.popitem(last=False)
        return False

    def forget(self, camera_id: str) -> None:
        """Drop what this replica knows about `camera_id` (its token changed or it was removed)."""
        self._good.pop(camera_id, None)
        self._bad.clear()

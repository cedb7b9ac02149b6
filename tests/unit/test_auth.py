"""app/auth.py: bearer parsing, the admin check, and the per-replica camera-token cache."""
from __future__ import annotations

import asyncio

import pytest

from app.auth import AuthError, CameraTokenCache, bearer_token, digest, is_admin
from stemcell.state.tokens import MAX_TOKEN_CHARS


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer ", "Bearer a b",
                                    "Bearer " + "x" * (MAX_TOKEN_CHARS + 1)])
def test_unusable_headers_are_401(header: str | None) -> None:
    with pytest.raises(AuthError) as err:
        bearer_token(header)
    assert err.value.status == 401


def test_bearer_token_and_admin() -> None:
    assert bearer_token("Bearer abc") == "abc" == bearer_token("bearer  abc ")  # scheme case-insensitive
    admin = digest("the-admin-token-123")
    assert is_admin("the-admin-token-123", admin) and not is_admin("the-admin-token-12", admin)


class _Store:
    """What the cache verifies against: counts the (slow, scrypt) checks it would cost."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens, self.calls = tokens, 0

    async def verify(self, camera: str, token: str) -> bool:
        self.calls += 1
        return self.tokens.get(camera) == token


def test_cache_spares_repeated_checks_until_ttl_or_forget() -> None:
    now = [0.0]
    store = _Store({"cam": "good"})
    cache = CameraTokenCache(store.verify, ttl_s=30.0, negative_ttl_s=2.0, clock=lambda: now[0])

    async def check(camera: str, token: str) -> bool:
        return await cache.check(camera, token)

    run = asyncio.run
    assert run(check("cam", "good")) and run(check("cam", "good")) and store.calls == 1
    assert not run(check("cam", "bad")) and not run(check("cam", "bad")) and store.calls == 2  # wrong: remembered
    now[0] = 3.0
    assert not run(check("cam", "bad")) and store.calls == 3  # the negative entry expired
    now[0] = 31.0
    assert run(check("cam", "good")) and store.calls == 4  # the positive entry expired: verified again
    store.tokens["cam"] = "rotated"
    assert run(check("cam", "good")) and store.calls == 4  # still cached on this replica ...
    cache.forget("cam")
    assert not run(check("cam", "good")) and store.calls == 5  # ... until the admin route forgets it
    assert run(check("cam", "rotated")) and not run(check("other", "rotated"))

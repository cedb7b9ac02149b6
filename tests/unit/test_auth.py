"""app/auth.py: bearer parsing, the admin check, and the replica-side camera-token table."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.auth import AuthError, CameraTokens, bearer_token, digest, is_admin
from stemcell.state import StateStore, new_token
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


def test_replica_checks_tokens_without_the_store_and_follows_revocations(tmp_path: Path) -> None:
    """The replica's table answers every check; the store is asked only for a legacy scrypt hash."""
    token = new_token()

    async def scenario() -> None:
        with StateStore(tmp_path / "state.db") as store:
            store.put_camera("cam", {}, token=token)
            legacy_calls: list[str] = []

            async def snapshot():
                return store.control_snapshot()

            async def changes(epoch: str, version: int, wait_s: float):
                return await asyncio.to_thread(store.control_changes, epoch, version, wait_s)

            async def verify(camera: str, tok: str) -> bool:
                legacy_calls.append(camera)
                return store.verify_camera_token(camera, tok)

            replica = CameraTokens(snapshot, changes, verify, wait_s=0.2)
            await replica.start()
            assert await replica.check("cam", token) and not await replica.check("cam", "w" * 43)
            assert not await replica.check("ghost", token)
            store.revoke_camera_token("cam")
            for _ in range(100):  # pushed by the long-poll, within milliseconds
                if not await replica.check("cam", token):
                    break
                await asyncio.sleep(0.01)
            assert not await replica.check("cam", token)
            store.save_plan_section("planner", {"routes": {"ex-0": "ex-0-g1"}})
            await replica.sync()
            assert replica.routes().actors == {"ex-0": "ex-0-g1"}
            assert legacy_calls == []
            await replica.close()

    asyncio.run(scenario())

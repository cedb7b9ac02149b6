"""stemcell.sharing.batcher: requests whose caller went away are not run (more batcher tests: test_runtime.py)."""
from __future__ import annotations

import asyncio

from stemcell.sharing import CrossCameraBatcher


def test_cancelled_requests_are_dropped_from_the_queue_not_run() -> None:
    async def main() -> list[list[int]]:
        release = asyncio.Event()
        calls: list[list[int]] = []

        async def run(items: list[int]) -> list[int]:
            calls.append(items)
            await release.wait()
            return items

        batcher: CrossCameraBatcher[int, int] = CrossCameraBatcher(run, max_batch=8, max_wait_ms=0, max_queue_frames=64)
        first = asyncio.ensure_future(batcher.submit(0, 1))
        await asyncio.sleep(0.01)  # dispatched and blocked: the next ones queue
        queued = {i: asyncio.ensure_future(batcher.submit(i, 2)) for i in (1, 2, 3)}
        await asyncio.sleep(0.01)
        assert batcher.queued_frames == 6
        queued[2].cancel()  # e.g. its request passed its deadline
        await asyncio.sleep(0)
        release.set()
        assert await first == 0 and await queued[1] == 1 and await queued[3] == 3
        assert batcher.queued_frames == 0
        await batcher.close()
        return calls

    assert asyncio.run(main()) == [[0], [1, 3]]

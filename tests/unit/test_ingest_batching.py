"""The pull ingest's batching: one call per interval for all of an executor's cameras
(`stemcell.ingest.schedule`), one uint8 array per call (`stemcell.ingest.PulledBatch`), queued at once
into the executor's batcher (`CrossCameraBatcher.submit_many`)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stemcell.ingest import NewestFrameSlot, PulledBatch
from stemcell.ingest.schedule import IDLE_WAKE_S, MAX_GATHER_S, PumpView, gather_window, next_due, pick
from stemcell.sharing import CrossCameraBatcher
from stemcell.sharing.batcher import Overloaded


def _cam(group: int = 0, due: float = 0.0, frame_at: float | None = 0.0, streaming: bool = True) -> PumpView:
    return PumpView(group, due, frame_at, streaming)


def test_due_cameras_with_frames_of_one_executor_go_together() -> None:
    cameras = [_cam(due=9.9, frame_at=9.95), _cam(due=10.0, frame_at=9.97), _cam(group=1, due=10.0, frame_at=9.99)]
    take, _ = pick(cameras, now=10.0, gather_s=0.05)
    assert take == [0, 1, 2]


def test_a_ready_frame_waits_for_a_camera_due_soon_then_goes_alone_after_the_window() -> None:
    cameras = [_cam(due=10.0, frame_at=10.0), _cam(due=10.02, frame_at=None)]
    take, wait = pick(cameras, now=10.01, gather_s=0.05)
    assert take == [] and wait == pytest.approx(0.04)  # woken earlier if camera 1's frame arrives
    take, _ = pick(cameras, now=10.05, gather_s=0.05)
    assert take == [0]  # the window is over: camera 1 is late, camera 0 does not wait longer


def test_a_camera_that_is_not_streaming_or_not_due_soon_is_never_waited_for() -> None:
    offline = [_cam(due=10.0, frame_at=10.0), _cam(due=0.0, frame_at=None, streaming=False)]
    assert pick(offline, now=10.0, gather_s=0.05)[0] == [0]
    later = [_cam(due=10.0, frame_at=10.0), _cam(due=10.2, frame_at=None)]
    assert pick(later, now=10.0, gather_s=0.05)[0] == [0]


def test_a_frame_before_its_due_time_waits_and_the_pump_wakes_when_it_is_due() -> None:
    take, wait = pick([_cam(due=10.08, frame_at=10.0)], now=10.0, gather_s=0.05)
    assert take == [] and wait == pytest.approx(0.08)
    assert pick([_cam(due=10.0, frame_at=None)], now=10.0, gather_s=0.05) == ([], IDLE_WAKE_S)


def test_an_executor_with_a_call_in_flight_gets_nothing_new() -> None:
    cameras = [_cam(group=0), _cam(group=1)]
    assert pick(cameras, now=1.0, gather_s=0.05, busy={0})[0] == [1]


def test_due_times_keep_the_rate_without_drift_or_catch_up_bursts() -> None:
    assert next_due(10.0, now=10.04, fps=10) == pytest.approx(10.1)  # waited for its batch: no drift
    assert next_due(10.0, now=12.0, fps=10) == 12.0  # after a stall: not a burst of due frames
    assert gather_window([10.0, 5.0]) == pytest.approx(0.05)
    assert gather_window([30.0]) == pytest.approx(0.5 / 30)
    assert gather_window([1.0]) == MAX_GATHER_S


def test_the_slot_tells_when_its_waiting_frame_arrived() -> None:
    slot: NewestFrameSlot[str] = NewestFrameSlot()
    assert slot.waiting_since() is None
    slot.put("a", 1.0)
    slot.put("b", 2.0)
    assert slot.waiting_since() == 2.0 and slot.dropped == 1
    assert slot.take() == ("b", 2.0) and slot.waiting_since() is None


def test_a_pulled_batch_is_one_contiguous_uint8_array_with_one_timestamp_and_size_per_frame() -> None:
    frames = np.zeros((2, 8, 8, 3), np.uint8)[:, ::-1]  # not contiguous
    batch = PulledBatch.of(["a", "b"], frames, [1.0, 2.0], [(720, 1280), (480, 640)])
    assert batch.frames.flags.c_contiguous and len(batch) == 2
    assert batch.frame_size(1) == (480, 640) and batch.timestamps.dtype == np.float64
    with pytest.raises(ValueError, match="uint8"):
        PulledBatch.of(["a"], np.zeros((1, 8, 8, 3), np.float32), [1.0], [(8, 8)])
    with pytest.raises(ValueError, match="timestamps"):
        PulledBatch.of(["a", "b"], np.zeros((2, 8, 8, 3), np.uint8), [1.0], [(8, 8), (8, 8)])


def test_submit_many_queues_a_group_at_once_into_one_run_with_errors_per_item() -> None:
    async def main() -> tuple[list[object], list[list[int]]]:
        calls: list[list[int]] = []

        async def run(items: list[int]) -> list[int | BaseException]:
            calls.append(items)
            return [ValueError(f"bad {i}") if i < 0 else 10 * i for i in items]

        batcher: CrossCameraBatcher[int, int] = CrossCameraBatcher(run, max_batch=8, max_wait_ms=50, max_queue_frames=4)
        answers = await batcher.submit_many([1, -2, 3], [1, 1, 1])
        first = asyncio.ensure_future(batcher.submit(7, 3))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):  # all or nothing past the queue bound
            await batcher.submit_many([5, 6], [1, 1])
        assert await first == 70 and batcher.queued_frames == 0
        await batcher.close()
        return answers, calls

    answers, calls = asyncio.run(main())
    assert answers[0] == 10 and answers[2] == 30 and isinstance(answers[1], ValueError)
    assert calls == [[1, -2, 3], [7]]  # the group went as one batch; the refused one never ran


def test_a_complete_group_runs_at_once_instead_of_waiting_for_more_frames() -> None:
    async def main() -> list[int | BaseException]:
        async def run(items: list[int]) -> list[int]:
            return items

        batcher: CrossCameraBatcher[int, int] = CrossCameraBatcher(run, max_batch=64, max_wait_ms=60_000)
        answers = await asyncio.wait_for(batcher.submit_many([1, 2], [1, 1], complete=True), 5.0)  # not a minute
        await batcher.close()
        return answers

    assert asyncio.run(main()) == [1, 2]

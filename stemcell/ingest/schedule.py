"""When the pull ingest sends frames: one batch per interval for all of an executor's cameras.

Every actor call has a fixed cost (serialising, a round trip, the executor's event loop and
batcher), about what decoding a small frame costs, so a call per camera per frame would cost as much
as the decoding itself. The pump therefore sends each executor one call per analysis interval with
every camera that is due. Cameras' frames arrive at different phases (streams start at different
times, network jitter), so a due camera whose frame is ready waits up to `gather_s` for the other
cameras of its executor that are due by then; a camera that is not streaming is never waited for,
and an executor with a call in flight gets nothing new (its cameras' slots keep only their newest
frame). Pure logic on monotonic seconds: the actor shell owns the threads and the clock.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

MAX_GATHER_S = 0.05  # never hold a ready frame longer than this for the rest of its batch
IDLE_WAKE_S = 1.0  # nothing due: ask again after this (a new frame wakes the pump sooner)


@dataclass(frozen=True)
class PumpView:
    """One camera as the pump sees it at one moment."""

    group: int  # the executor slot its frames go to
    next_due: float  # when its next frame is wanted (monotonic seconds)
    frame_at: float | None  # when the frame waiting in its slot arrived (None: nothing new)
    streaming: bool  # frames are coming in (a camera that is not is never waited for)


def gather_window(fps: Sequence[float]) -> float:
    """How long a ready frame may wait for its batch: half the fastest camera's interval, at most
    `MAX_GATHER_S` (less latency added than one frame interval, whatever the rates)."""
    return min(MAX_GATHER_S, 0.5 / max(fps)) if fps else MAX_GATHER_S


def pick(cameras: Sequence[PumpView], now: float, gather_s: float,
         busy: Collection[int] = ()) -> tuple[list[int], float]:
    """Which cameras (indices into `cameras`) to take and send now, and the seconds until the pump
    should look again (sooner if a frame arrives).

    A camera is ready when it is due and a frame waits. An executor's ready cameras go when none of
    its other streaming cameras will be due within `gather_s` without a frame ready by then, or when
    the first of them has been ready for `gather_s`."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(cameras):
        if c.group not in busy:
            groups.setdefault(c.group, []).append(i)
    take: list[int] = []
    wake = now + IDLE_WAKE_S
    for members in groups.values():
        ready = [i for i in members if cameras[i].frame_at is not None and now >= cameras[i].next_due]
        waiting = [i for i in members if i not in ready and cameras[i].streaming
                   and cameras[i].next_due <= now + gather_s]
        for i in members:  # a frame already here, not yet due: look again when it is
            if cameras[i].frame_at is not None and cameras[i].next_due > now:
                wake = min(wake, cameras[i].next_due)
        if not ready:
            continue
        since = min(max(cameras[i].frame_at or now, cameras[i].next_due) for i in ready)
        if not waiting or now - since >= gather_s:
            take.extend(ready)
        else:
            wake = min(wake, since + gather_s)
    return sorted(take), max(0.0, wake - now)


def next_due(previous: float, now: float, fps: float) -> float:
    """A camera taken `now`: its next frame is wanted one interval after the previous due time (no
    drift from the batch's waiting), but never earlier than now (no burst to catch up after a stall)."""
    return max(previous + 1.0 / fps, now)


__all__ = ["IDLE_WAKE_S", "MAX_GATHER_S", "PumpView", "gather_window", "next_due", "pick"]

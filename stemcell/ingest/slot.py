"""The newest frame of one stream, and how many were overwritten unread.

A reader thread decodes at the source's rate; the analysis side takes frames at the camera's
analysis rate, which may be lower (or fall behind under load). Queueing would grow latency without
bound; the newest frame is what an operator wants analysed, so older unread ones are dropped and
counted (`frames_dropped` in the fleet list).
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

F = TypeVar("F")


class NewestFrameSlot(Generic[F]):
    """One-frame mailbox between a producer thread and a consumer (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: tuple[F, float] | None = None
        self.dropped = 0  # frames replaced before anyone took them
        self.put_count = 0

    def put(self, frame: F, ts: float) -> None:
        with self._lock:
            if self._frame is not None:
                self.dropped += 1
            self._frame = (frame, ts)
            self.put_count += 1

    def waiting_since(self) -> float | None:
        """The timestamp of the frame waiting to be taken (None: nothing new)."""
        with self._lock:
            return None if self._frame is None else self._frame[1]

    def take(self) -> tuple[F, float] | None:
        """The newest frame and its timestamp, emptying the slot; None when nothing new came."""
        with self._lock:
            frame, self._frame = self._frame, None
            return frame

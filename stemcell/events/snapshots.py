"""A bounded folder of event snapshots (JPEG at event start): total bytes and age are capped.

Why bounded here and not by an operator's cron: an event storm (a flickering app) would otherwise fill
the ingress node's disk; the oldest files go first, so the newest events always keep their picture.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class SnapshotStore:
    """`save(event_id, jpeg)` -> path; after each save, files past `max_age_s` or beyond `max_bytes` go."""

    def __init__(self, folder: Path, max_bytes: int, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        if max_bytes < 1 or max_age_s <= 0:
            raise ValueError(f"snapshot limits must be positive, got {max_bytes} bytes, {max_age_s} s")
        self.folder, self.max_bytes, self.max_age_s, self._clock = Path(folder), max_bytes, max_age_s, clock
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_of(self, event_id: str) -> Path:
        if not event_id.isalnum():
            raise ValueError(f"bad event id {event_id!r}")
        return self.folder / f"{event_id}.jpg"

    def save(self, event_id: str, jpeg: bytes) -> str | None:
        """Write the snapshot (None when it alone exceeds the byte limit), then prune."""
        if len(jpeg) > self.max_bytes:
            log.warning("snapshot of event %s is %d bytes, over the %d limit: not kept", event_id, len(jpeg), self.max_bytes)
            return None
        path = self.path_of(event_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)  # readers never see half a file
        now = self._clock()
        os.utime(path, (now, now))
        self.prune()
        return str(path) if path.exists() else None

    def prune(self) -> int:
        """Remove expired files, then the oldest until the folder fits `max_bytes`; returns how many went."""
        now = self._clock()
        files = []
        for p in self.folder.glob("*.jpg"):
            try:
                st = p.stat()
            except FileNotFoundError:  # another replica pruned it meanwhile
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(size for _, size, _ in files)
        removed = 0
        for mtime, size, p in files:
            if now - mtime <= self.max_age_s and total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

"""Events in a process that produces results: track, persist, snapshot, deliver (over `stemcell.events`).

`EventHub.on_results` is the one hook: the ingress calls it after each push request's inference, and a
pull ingest actor calls the same method after each batch it analysed (it lives in `actors/` so both
may import it; it is synchronous and thread-safe, so a threaded actor needs no event loop). The
webhook list comes from the StateStore: the ingress follows it with `follow_webhooks()` (a task on its
event loop), a threaded caller passes `apply_webhooks(ray.get(store.list_webhooks.remote()))` now and
then. It never waits on the store or on a webhook receiver: store writes are sent without awaiting their answer (Ray runs them in order per
caller, and `StateStore.put_event` is an idempotent upsert), webhook deliveries only enter a bounded
queue. So events cost inference no more than a dictionary update per result.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.actor import ActorHandle
from ray.util.metrics import Counter

from stemcell.events import EventChange, EventTracker, SnapshotStore, WebhookDispatcher, WebhookSpec
from stemcell.events.webhooks import DeliveryPolicy
from stemcell.imaging import encode_jpeg
from stemcell.serve_config import EventsSection, WebhooksSection

log = logging.getLogger(__name__)


def delivery_policy(section: WebhooksSection) -> DeliveryPolicy:
    return DeliveryPolicy(queue_size=section.queue_size, max_attempts=section.max_attempts,
                          backoff_s=section.backoff_s, backoff_max_s=section.backoff_max_s, timeout_s=section.timeout_s)


class EventHub:
    """One per result-producing process; holds the tracker, the snapshot folder and the webhook senders."""

    def __init__(self, events: EventsSection, webhooks: WebhooksSection, store: ActorHandle) -> None:
        self.events, self.webhooks_config, self.store = events, webhooks, store
        self.tracker = EventTracker()
        self.snapshots = (SnapshotStore(events.snapshot_dir, events.snapshot_max_bytes, events.snapshot_max_age_s)
                          if events.snapshot_dir is not None else None)
        self.dispatcher = WebhookDispatcher(delivery_policy(webhooks))
        self._lock = threading.Lock()  # one tracker, possibly fed by several threads
        self._events_total = Counter("stemcell_events_total", "Event starts and ends found in served results.",
                                     tag_keys=("camera", "app", "kind"))

    def apply_webhooks(self, specs: list[WebhookSpec]) -> None:
        """Deliver to exactly these webhooks from now on (as the StateStore lists them)."""
        with self._lock:
            self.dispatcher.sync(specs)

    async def refresh_webhooks(self) -> None:
        self.apply_webhooks(await self.store.list_webhooks.remote())

    async def follow_webhooks(self) -> None:
        """Re-read the webhook list every `webhooks.refresh_s` (another replica may add or remove one)."""
        while True:
            try:
                await self.refresh_webhooks()
            except Exception as exc:  # noqa: BLE001 - a restarting store: keep the last list, try again
                log.warning("webhook list not refreshed: %r", exc)
            await asyncio.sleep(self.webhooks_config.refresh_s)

    def on_results(self, camera_id: str, frames: Sequence[np.ndarray], results: Sequence[dict[str, Any]]) -> list[EventChange]:
        """Track events in one camera's answered frames (in order); persist and deliver starts and ends."""
        if not self.events.enabled:
            return []
        with self._lock:
            changes = self.tracker.observe(camera_id, results, self._snapshotter(frames))
            self._emit(changes)
        return changes

    def close_camera(self, camera_id: str) -> None:
        """A camera was removed (or went offline): its open events end now."""
        with self._lock:
            self._emit(self.tracker.close_camera(camera_id, time.time()))

    def _emit(self, changes: list[EventChange]) -> None:
        for change in changes:
            self.store.put_event.remote(change.event)  # not awaited: inference does not wait on the store
            self._events_total.inc(1, tags={"camera": change.event.camera_id, "app": change.event.app,
                                            "kind": change.kind})
            log.info("event %s %s: camera %s app %s", change.kind, change.event.event_id, change.event.camera_id,
                     change.event.app)
        if changes:
            self.dispatcher.publish(changes)

    def _snapshotter(self, frames: Sequence[np.ndarray]):  # noqa: ANN202 - the tracker's snapshot callback
        snapshots = self.snapshots
        if snapshots is None:
            return None

        def save(event_id: str, index: int) -> str | None:
            try:
                return snapshots.save(event_id, encode_jpeg(frames[index], quality=85))
            except (OSError, ValueError) as exc:  # a full disk loses the picture, never the event
                log.warning("snapshot of event %s not kept: %s", event_id, exc)
                return None
        return save

    def close(self) -> None:
        self.dispatcher.close()

"""Events in a process that produces results: track, persist, snapshot, deliver (over `stemcell.events`).

`EventHub.on_results` is the one hook: the ingress calls it after each push request's inference, and a
pull ingest calls the same method after each batch it analysed. It never waits on the store or on a
webhook receiver: store writes are sent without awaiting their answer (Ray runs them in order per
caller, and `StateStore.put_event` is an idempotent upsert), webhook deliveries only enter a bounded
queue. So events cost inference no more than a dictionary update per result.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.actor import ActorHandle

from app.metrics import metrics
from stemcell.events import EventChange, EventTracker, SnapshotStore, WebhookDispatcher
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
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the webhook list, then follow it (another replica may add or remove webhooks)."""
        await self.refresh_webhooks()
        self._refresher = asyncio.create_task(self._follow_webhooks())

    async def refresh_webhooks(self) -> None:
        self.dispatcher.sync(await self.store.list_webhooks.remote())

    async def _follow_webhooks(self) -> None:
        while True:
            await asyncio.sleep(self.webhooks_config.refresh_s)
            try:
                await self.refresh_webhooks()
            except Exception as exc:  # noqa: BLE001 - a restarting store: keep the last list, try again
                log.warning("webhook list not refreshed: %r", exc)

    def on_results(self, camera_id: str, frames: Sequence[np.ndarray], results: Sequence[dict[str, Any]]) -> list[EventChange]:
        """Track events in one camera's answered frames (in order); persist and deliver starts and ends."""
        if not self.events.enabled:
            return []
        changes = self.tracker.observe(camera_id, results, self._snapshotter(frames))
        self._emit(changes)
        return changes

    def close_camera(self, camera_id: str) -> None:
        """A camera was removed (or went offline): its open events end now."""
        self._emit(self.tracker.close_camera(camera_id, time.time()))

    def _emit(self, changes: list[EventChange]) -> None:
        for change in changes:
            self.store.put_event.remote(change.event)  # not awaited: inference does not wait on the store
            metrics().record_event(change.event.camera_id, change.event.app, change.kind)
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
        if self._refresher is not None:
            self._refresher.cancel()
        self.dispatcher.close()

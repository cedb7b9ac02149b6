"""The one event hub: every camera's events tracked in one place (over `stemcell.events`).

Producers of results (each ingress replica after a push request, each CameraIngest actor after a
batch) hold an `EventForwarder`: `on_results` only appends compact records to a buffer (no Ray call,
no encoding on the request's path), and a background loop sends the buffer to the hub: every
`events.forward_interval_s` for the ingress (one call per replica per interval, whatever the request
rate), after each batch for an ingest actor (`due()`: its results already come in batches, one per
executor per analysis interval, so a timer would only add wake-ups with nothing to send). The hub
(`EventHubActor`: one named, detached actor per namespace) puts each camera's records back in frame
order (`stemcell.events.forward.Reorderer`), tracks starts and ends, saves snapshots, writes the store
(not awaited: Ray runs one caller's calls in order and `StateStore.put_event` is an idempotent upsert)
and delivers webhooks from bounded queues, so its webhook counters are the whole cluster's. It also
caps the `events` table (`events.max_rows`, `events.max_age_s`).

A restarted hub takes back the events the store still has open (`EventTracker.restore`), so an event that
started before the restart ends under its own id when its camera's results say so; one whose camera never
reports again stays open until the table's age cap removes it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle
from ray.util.metrics import Counter

from stemcell.events import EventChange, EventTracker, SnapshotStore, WebhookDispatcher
from stemcell.events.forward import Observed, Reorderer, ResultBatcher
from stemcell.events.webhooks import DeliveryPolicy, DeliveryStats
from stemcell.imaging import encode_jpeg
from stemcell.serve_config import ServeConfig, WebhooksSection

log = logging.getLogger(__name__)
_TICK_S = 0.02  # how often the hub releases held records (well under events.reorder_s)
_PRUNE_EVERY_S = 60.0  # how often the events table is capped


def delivery_policy(section: WebhooksSection) -> DeliveryPolicy:
    return DeliveryPolicy(queue_size=section.queue_size, max_attempts=section.max_attempts,
                          backoff_s=section.backoff_s, backoff_max_s=section.backoff_max_s, timeout_s=section.timeout_s,
                          allow_private=section.allow_private)


def event_hub_name(config: ServeConfig) -> str:
    return f"{config.app_name}-events"


class EventHubShell:
    """The actor class; `EventHubActor` is its Ray actor (see `start_event_hub`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from actors.state_store import get_or_create_state_store

        cfg = ServeConfig.model_validate(config)
        self.events, self.webhooks_config = cfg.events, cfg.webhooks
        self.store = get_or_create_state_store(str(cfg.state_path), namespace=cfg.executors.namespace)
        self.tracker = EventTracker()
        restored = self.tracker.restore(ray.get(self.store.open_events.remote(), timeout=10.0))
        if restored:
            log.info("event hub took back %d open events from the store", restored)
        self.snapshots = (SnapshotStore(cfg.events.snapshot_dir, cfg.events.snapshot_max_bytes,
                                        cfg.events.snapshot_max_age_s) if cfg.events.snapshot_dir is not None else None)
        self.dispatcher = WebhookDispatcher(delivery_policy(cfg.webhooks))
        self.reorder = Reorderer(cfg.events.reorder_s)
        self._lock = threading.Lock()  # the tracker and the dispatcher: actor calls and the release thread
        self._events_total = Counter("stemcell_events_total", "Event starts and ends found in served results.",
                                     tag_keys=("camera", "app", "kind"))
        self.refresh_webhooks()
        threading.Thread(target=self._run, daemon=True, name="event-hub").start()

    # ------------------------------------------------------------------ calls
    def observe(self, items: list[Observed]) -> int:
        """A producer's batch: held, then tracked in order by the release thread."""
        with self._lock:
            self.reorder.add(items, time.monotonic())
        return len(items)

    def refresh_webhooks(self) -> int:
        """Deliver to exactly the webhooks the StateStore lists now; returns how many."""
        specs = ray.get(self.store.list_webhooks.remote(), timeout=10.0)
        with self._lock:
            self.dispatcher.sync(specs)
        return len(specs)

    def webhook_stats(self) -> Mapping[str, DeliveryStats]:
        """Delivery counters per webhook id (every camera's events are delivered here)."""
        with self._lock:
            return {webhook_id: self.dispatcher.stats(webhook_id) for webhook_id in self.dispatcher.webhook_ids()}

    def hub_stats(self) -> Mapping[str, int]:
        """Open events, records held for ordering, records dropped as too late (tests, operators)."""
        with self._lock:
            return {"open_events": len(self.tracker.open_events()), "held": self.reorder.held(), "late": self.reorder.late}

    # ------------------------------------------------------------------ the release thread
    def _run(self) -> None:
        refreshed = pruned = time.monotonic()
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            try:
                self._release(now)
                if now - refreshed >= self.webhooks_config.refresh_s:  # another replica may add or remove one
                    refreshed = now
                    self.refresh_webhooks()
                if now - pruned >= _PRUNE_EVERY_S:
                    pruned = now
                    self.store.prune_events.remote(self.events.max_rows, self.events.max_age_s)
            except Exception:  # the hub must outlive any one bad round (a restarting store; logged)
                log.exception("event hub round failed")

    def _release(self, now: float) -> None:
        with self._lock:
            changes: list[EventChange] = []
            for item in self.reorder.ready(now):
                if item.results is None:
                    changes += self.tracker.close_camera(item.camera_id, item.frame_ts)
                else:
                    changes += self.tracker.observe(item.camera_id, [item.as_frame()], self._snapshotter(item.frame))
            self._emit(changes)

    def _emit(self, changes: list[EventChange]) -> None:
        for change in changes:
            self.store.put_event.remote(change.event)  # not awaited: see the module docstring
            self._events_total.inc(1, tags={"camera": change.event.camera_id, "app": change.event.app,
                                            "kind": change.kind})
            log.info("event %s %s: camera %s app %s", change.kind, change.event.event_id, change.event.camera_id,
                     change.event.app)
        if changes:
            self.dispatcher.publish(changes)

    def _snapshotter(self, jpeg: bytes | None):  # noqa: ANN202 - the tracker's snapshot callback
        snapshots = self.snapshots
        if snapshots is None or jpeg is None:
            return None

        def save(event_id: str, _index: int) -> str | None:
            try:
                return snapshots.save(event_id, jpeg)
            except (OSError, ValueError) as exc:  # a full disk loses the picture, never the event
                log.warning("snapshot of event %s not kept: %s", event_id, exc)
                return None
        return save


EventHubActor = ray.remote(EventHubShell)


def start_event_hub(config: ServeConfig) -> ActorHandle:
    """Find or create the hub (detached: it outlives the replica or ingest actor that made it)."""
    return EventHubActor.options(
        name=event_hub_name(config), namespace=config.executors.namespace, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_restarts=-1, max_task_retries=-1,
    ).remote(config.model_dump(mode="json"))


def _snapshot_jpeg(frame: np.ndarray) -> bytes | None:
    """The frame as JPEG; None (the event keeps no picture, the batch still goes) when it cannot be encoded."""
    try:
        return encode_jpeg(frame, quality=85)
    except (ValueError, TypeError, AttributeError) as exc:  # not an RGB uint8 array
        log.warning("event snapshot not encoded: %s", exc)
        return None


class EventForwarder:
    """A producer's side: buffer results (cheap, thread-safe), send them to the hub in batches."""

    def __init__(self, config: ServeConfig, hub: ActorHandle | None = None) -> None:
        self.enabled = config.events.enabled
        self.interval_s = config.events.forward_interval_s
        self.batcher = ResultBatcher(keep_frames=config.events.snapshot_dir is not None)
        self.hub = hub if hub is not None else start_event_hub(config)
        self._due = threading.Event()  # `follow_batches_in_thread`: something was buffered, send it

    def on_results(self, camera_id: str, frames: Sequence[np.ndarray], results: Sequence[dict[str, Any]]) -> None:
        """One camera's answered frames (in order); a dictionary copy per frame, nothing more."""
        if self.enabled:
            self.batcher.add(camera_id, frames, results)

    def close_camera(self, camera_id: str) -> None:
        """A camera was removed (or stopped): its open events end."""
        if self.enabled:
            self.batcher.close(camera_id, time.time())
            self._due.set()  # its end goes now, even when no batch follows

    def due(self) -> None:
        """A batch's results were all buffered (`on_results`): `follow_batches_in_thread` sends them now."""
        self._due.set()

    def send(self) -> ray.ObjectRef | None:
        """Send what is buffered (frames at candidate starts as JPEG); None when nothing was."""
        items = [item if item.frame is None else Observed(item.camera_id, item.frame_ts, item.results,
                                                          _snapshot_jpeg(item.frame))
                 for item in self.batcher.drain()]
        return self.hub.observe.remote(items) if items else None

    async def follow(self) -> None:
        """Forever (a task on the ingress's event loop): send every `interval_s`, off the request path."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                ref = await asyncio.to_thread(self.send)
                if ref is not None:
                    await ref
            except Exception as exc:  # noqa: BLE001 - a restarting hub: that batch is lost, the next one goes
                log.warning("event batch not delivered to the hub: %r", exc)

    def follow_batches_in_thread(self) -> threading.Thread:
        """A daemon thread (for a threaded producer without an event loop) sending what is buffered each
        time `due()` or `close_camera` is called: one call per batch, none while nothing comes. The hub's
        answer is awaited here, never on the batch's path; batches that end while a call is in flight go
        together in the next one."""
        def run() -> None:
            while True:
                self._due.wait()
                self._due.clear()  # before draining: what is buffered after the drain sets it again
                try:
                    ref = self.send()
                    if ref is not None:
                        ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - as in `follow`
                    log.warning("event batch not delivered to the hub: %r", exc)
        thread = threading.Thread(target=run, daemon=True, name="event-forward")
        thread.start()
        return thread


__all__ = ["EventForwarder", "EventHubActor", "EventHubShell", "delivery_policy", "event_hub_name", "start_event_hub"]

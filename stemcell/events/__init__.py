"""Events out of served results: when an app's `event_active` turns on and off, who is told.

Pure logic (no Ray, no HTTP server): `tracker` turns per-frame results into event starts and ends,
`snapshots` keeps a bounded folder of JPEGs taken at event start, `webhooks` checks targets, signs
bodies and delivers them from bounded per-webhook queues. The ingress (and the pull ingest) hold them.
"""
from stemcell.events.snapshots import SnapshotStore
from stemcell.events.tracker import Event, EventChange, EventTracker
from stemcell.events.webhooks import WebhookDispatcher, WebhookSpec, check_target, sign

__all__ = ["Event", "EventChange", "EventTracker", "SnapshotStore", "WebhookDispatcher", "WebhookSpec",
           "check_target", "sign"]

"""Prometheus metrics of pulled cameras (`ray.util.metrics`, made in the CameraIngest actor's process).

Exported (Ray prefixes each with `ray_`): `stemcell_ingest_frames_total` (frames read from the source),
`stemcell_ingest_frames_analysed_total` (frames its executor answered), `stemcell_ingest_frames_dropped_total`
(frames replaced unread: newest-frame-only), `stemcell_ingest_reconnects_total`, all tagged `camera`;
and `stemcell_ingest_camera_state` (tags `camera`, `state`: 1 for the camera's state, 0 for the others).
The counters advance by the difference of the health totals between reports
(`stemcell.ingest.report`), so no metric call sits on a reader thread's per-frame path.
"""
from __future__ import annotations

from collections.abc import Mapping

from ray.util.metrics import Counter, Gauge

from stemcell.ingest import HealthSnapshot
from stemcell.ingest.report import CounterDeltas, Totals, state_gauge

REPORT_EVERY_S = 5.0  # Prometheus scrapes every 10-15 s; rates over 1 m see every report


class IngestMetrics:
    """One per CameraIngest actor; `report(fleet)` every `REPORT_EVERY_S`."""

    def __init__(self) -> None:
        self._counters = {
            "frames_in": Counter("stemcell_ingest_frames_total", "Frames read from pulled cameras' sources.",
                                 tag_keys=("camera",)),
            "frames_analysed": Counter("stemcell_ingest_frames_analysed_total",
                                       "Frames of pulled cameras their executor analysed.", tag_keys=("camera",)),
            "frames_dropped": Counter("stemcell_ingest_frames_dropped_total",
                                      "Frames of pulled cameras replaced before analysis (newest frame only).",
                                      tag_keys=("camera",)),
            "reconnects": Counter("stemcell_ingest_reconnects_total", "Re-connections of pulled cameras after a failure.",
                                  tag_keys=("camera",)),
        }
        self._state = Gauge("stemcell_ingest_camera_state", "1 for a pulled camera's state "
                            "(streaming, reconnecting, offline, stopped), 0 for the others.", tag_keys=("camera", "state"))
        self._deltas = CounterDeltas()
        self._reported: set[str] = set()

    def report(self, fleet: Mapping[str, HealthSnapshot]) -> None:
        for camera_id, delta in self._deltas.step({c: Totals.of(s) for c, s in fleet.items()}).items():
            for name, counter in self._counters.items():
                if getattr(delta, name):
                    counter.inc(getattr(delta, name), tags={"camera": camera_id})
        for camera_id in self._reported | set(fleet):  # a camera detached since: every state 0
            snap = fleet.get(camera_id)
            for state, value in state_gauge(snap.state if snap is not None else None).items():
                self._state.set(value, tags={"camera": camera_id, "state": state})
        self._reported = set(fleet)

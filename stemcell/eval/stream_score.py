"""Score what a live stream got back against the world's ground truth (the demo's report).

A camera posts frames with their timestamps; some are dropped on the way (the sender keeps only
the newest frame when the server is behind) and each app analyses only every k-th frame it gets
(its planned frame rate) and repeats its last answer in between. So the truth is indexed by the
frame the timestamp names, and only answers computed on a frame (`fresh`) count as samples.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stemcell.eval.event_metrics import sampled_event_score
from stemcell.training.metrics import binary_metrics


@dataclass(frozen=True)
class StreamRecord:
    """One answered frame: the source timestamp, the round-trip latency, the per-app results."""

    ts: float
    latency_ms: float
    results: tuple[Mapping[str, object], ...]  # [{app, label, score, event_active, fresh}, ...]


def score_stream(
    camera: str,
    records: Sequence[StreamRecord],
    truth: np.ndarray,
    app_columns: Mapping[str, int],
    fps: float,
    elapsed_s: float,
) -> list[dict[str, object]]:
    """One row per app: frames answered and analysed, fps, p50/p99 latency, frame and event F1.

    `truth` is bool (frames, classes) of the stream from ts = 0 at `fps`; `app_columns` maps each
    app to its class column. Frame F1 is over the frames the app analysed itself; event F1 holds
    each analysed answer until the next (what the app reports), over the span the stream covered.
    """
    if not records:
        return [{"camera": camera, "app": app, "frames": 0} for app in app_columns]
    ordered = sorted(records, key=lambda r: r.ts)
    index = np.clip(np.rint(np.array([r.ts for r in ordered]) * fps).astype(int), 0, len(truth) - 1)
    keep = np.concatenate([[True], np.diff(index) > 0])  # a repeated frame index answers once
    span = slice(0, int(index[-1]) + 1)
    latency = np.array([r.latency_ms for r in records])
    rows = []
    for app, column in app_columns.items():
        answers = [next((x for x in r.results if x["app"] == app), None) for r in ordered]
        fresh = keep & np.array([bool(a and a.get("fresh", True)) for a in answers])
        labels = np.array([bool(a and a["label"]) for a in answers])
        sampled, predicted = index[fresh], labels[fresh]
        frame = binary_metrics(predicted, truth[sampled, column])
        event = sampled_event_score(sampled, predicted, truth[span, column])
        rows.append({
            "camera": camera, "app": app, "frames": len(records), "analysed": int(fresh.sum()),
            "fps": round(len(records) / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            "p50_ms": round(float(np.percentile(latency, 50)), 1),
            "p99_ms": round(float(np.percentile(latency, 99)), 1),
            "frame_f1": round(frame.f1, 3), "event_f1": round(event.f1, 3),
            "events": event.true_events,
        })
    return rows

"""Scoring a live stream's answers against ground truth (dropped frames, held answers, repeats)."""
from __future__ import annotations

import numpy as np

from stemcell.eval.stream_score import StreamRecord, score_stream


def _record(ts: float, label: bool, fresh: bool = True, ms: float = 10.0) -> StreamRecord:
    return StreamRecord(ts, ms, ({"app": "car", "label": label, "score": float(label), "event_active": label,
                                  "fresh": fresh},))


def test_perfect_answers_on_every_frame_score_one() -> None:
    truth = np.zeros((20, 2), bool)
    truth[3:8, 1] = truth[12:15, 1] = True
    records = [_record(i / 10, bool(truth[i, 1])) for i in range(20)]
    (row,) = score_stream("cam", records, truth, {"car": 1}, fps=10.0, elapsed_s=2.0)
    assert row["frame_f1"] == 1.0 and row["event_f1"] == 1.0 and row["events"] == 2
    assert row["frames"] == 20 and row["analysed"] == 20 and row["fps"] == 10.0


def test_held_answers_are_not_samples_and_dropped_frames_miss_events() -> None:
    truth = np.zeros((20, 1), bool)
    truth[3:5, 0] = truth[12:16, 0] = True
    # frames 3-4 never arrived; frame 13 is a held (not fresh) positive, frame 14 a fresh one
    records = [_record(i / 10, bool(truth[i, 0]), fresh=i != 13) for i in range(20) if i not in (3, 4)]
    (row,) = score_stream("cam", records, truth, {"car": 0}, fps=10.0, elapsed_s=2.0)
    assert row["analysed"] == 17 and row["events"] == 2
    assert row["event_f1"] == round(2 * 0.5 * 1.0 / 1.5, 3)  # recall 1/2, precision 1


def test_no_answers_gives_empty_rows() -> None:
    rows = score_stream("cam", [], np.zeros((5, 1), bool), {"car": 0, "bus": 0}, fps=10.0, elapsed_s=1.0)
    assert [r["frames"] for r in rows] == [0, 0]

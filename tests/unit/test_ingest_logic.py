"""Pulled cameras' pure logic: source checks, backoff and states, the newest-frame slot, metric reports."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stemcell.ingest import (
    Backoff,
    CameraHealth,
    ForbiddenSource,
    NewestFrameSlot,
    UnsupportedSource,
    check_source,
)
from stemcell.ingest.report import CounterDeltas, Totals, state_gauge
from stemcell.serve_config import IngestSection


def test_sources_by_scheme(tmp_path: Path) -> None:
    assert check_source("rtsp://10.0.0.5:554/live", []).kind == "rtsp"
    assert check_source("https://cam.example/mjpeg", []).kind == "http"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    assert check_source(str(clip), [tmp_path]).location == str(clip.resolve())
    assert check_source(f"file://{clip}", [tmp_path]).kind == "file"
    udp = check_source("rtsp://h/s", [], transport="udp")
    assert udp.capture_options().startswith("rtsp_transport;udp|") and check_source(str(clip), [tmp_path]).capture_options() == ""
    for bad in ("ftp://h/x", "udp://239.0.0.1:5000", "clip.mp4", "rtsp:///nohost", " "):
        with pytest.raises(UnsupportedSource):
            check_source(bad, [tmp_path])


def test_file_sources_only_under_allowed_dirs(tmp_path: Path) -> None:
    allowed = tmp_path / "videos"
    allowed.mkdir()
    (tmp_path / "secret").write_text("no")
    (allowed / "link").symlink_to(tmp_path / "secret")
    for escape in (str(tmp_path / "secret"), f"{allowed}/../secret", str(allowed / "link"), "/etc/passwd"):
        with pytest.raises(ForbiddenSource):
            check_source(escape, [allowed])
    with pytest.raises(ForbiddenSource):
        check_source(str(allowed / "a.mp4"), [])  # no allowed folders: no file sources at all


def test_backoff_is_capped_jittered_and_goes_offline() -> None:
    b = Backoff(base_s=0.5, cap_s=4.0, jitter=0.5, max_failures=6, offline_retry_s=30.0)
    assert [b.delay(n, 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.delay(3, 0.999) == pytest.approx(1.001, abs=1e-3)  # up to half drawn off
    assert b.delay(6, 0.3) == 30.0
    assert [b.state_after(n) for n in (0, 1, 5, 6, 9)] == ["streaming", "reconnecting", "reconnecting", "offline",
                                                           "offline"]
    with pytest.raises(ValueError):
        Backoff(base_s=2.0, cap_s=1.0)


def test_health_state_machine() -> None:
    h = CameraHealth(Backoff(max_failures=2, offline_retry_s=7.0))
    assert h.state == "reconnecting"  # connecting for the first time
    h.frame(now=1.0, wall=100.0)
    assert h.state == "streaming" and h.reconnects == 0
    assert h.failed("read failed", 0.0) == 0.5 and h.state == "reconnecting"
    assert h.failed("cannot open", 0.0) == 7.0 and h.state == "offline"
    h.frame(now=2.0, wall=101.0)
    h.analysed(2.0, 3)
    snap = h.snapshot(now=2.0, dropped=4)
    assert (snap.state, snap.reconnects, snap.last_error, snap.frames_dropped) == ("streaming", 1, "cannot open", 4)
    assert snap.last_frame_at == 101.0 and snap.fps_in == pytest.approx(2 / 5) and snap.fps_analysed == pytest.approx(3 / 5)
    assert h.snapshot(now=60.0, dropped=0).fps_in == 0.0  # rates are over the last 5 s
    h.stop()
    assert h.state == "stopped"
    assert CameraHealth(Backoff(), enabled=False).state == "stopped"


def test_newest_frame_slot_drops_unread_frames() -> None:
    slot: NewestFrameSlot[int] = NewestFrameSlot()
    assert slot.take() is None
    for i in range(5):
        slot.put(i, float(i))
    assert slot.take() == (4, 4.0) and slot.dropped == 4 and slot.take() is None
    writers = [threading.Thread(target=lambda: [slot.put(1, 0.0) for _ in range(1000)]) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert slot.put_count == 4005 and slot.dropped == 4 + 3999  # every put but the one kept was dropped


def test_ingest_section_defaults() -> None:
    section = IngestSection()
    assert section.allowed_dirs == [] and section.cameras_per_actor == 64 and section.max_failures == 5
    with pytest.raises(ValueError):
        IngestSection(cameras_per_actor=0)


def test_metric_reports_advance_counters_by_differences_and_zero_gone_cameras() -> None:
    h = CameraHealth(Backoff())
    for t in range(3):
        h.frame(now=float(t), wall=100.0 + t)
    h.analysed(3.0, 2)
    deltas = CounterDeltas()
    first = deltas.step({"a": Totals.of(h.snapshot(3.0, dropped=1))})
    assert first == {"a": Totals(frames_in=3, frames_analysed=2, frames_dropped=1, reconnects=0)}
    h.frame(now=4.0, wall=104.0)
    assert deltas.step({"a": Totals.of(h.snapshot(4.0, dropped=1))}) == {"a": Totals(frames_in=1)}
    # re-attached: its totals start again from 0, and the new totals are the increment (never negative)
    assert deltas.step({"a": Totals(frames_in=2)}) == {"a": Totals(frames_in=2)}
    assert deltas.step({}) == {} and deltas.step({"a": Totals(frames_in=5)}) == {"a": Totals(frames_in=5)}
    assert state_gauge("offline") == {"streaming": 0.0, "reconnecting": 0.0, "offline": 1.0, "stopped": 0.0}
    assert set(state_gauge(None).values()) == {0.0}

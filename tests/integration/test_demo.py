"""`stemcell demo` end to end at CI scale: train, plan, serve, stream a synthetic and a file camera, report."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray import serve

from app.cli import main
from benchmarks.ports import reserved_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def test_demo_streams_cameras_over_http_and_scores_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with reserved_port() as port:
        try:
            code = main(["demo", "--config", str(REPO / "configs" / "ci.yaml"), "--workdir", str(tmp_path),
                         "--cameras", "1", "--duration", "6", "--port", str(port)])
        finally:
            serve.shutdown()
    assert code == 0
    out = capsys.readouterr().out
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    result = json.loads((tmp_path / "results" / "demo.json").read_text())
    rows = result["rows"]
    assert {(r["camera"], r["app"]) for r in rows} == {(c, a) for c in ("cam-0", "cam-file") for a in ("car", "person")}
    for r in rows:  # every camera was answered at close to its rate, and scored against ground truth
        assert r["frames"] >= 20 and r["analysed"] >= 1 and r["p50_ms"] > 0
        assert 0.0 <= r["event_f1"] <= 1.0 and 0.0 <= r["frame_f1"] <= 1.0
    assert [r["seen_in_training"] for r in rows if r["camera"] == "cam-file"] == [False, False]
    assert pq.read_table(tmp_path / "results" / "demo.parquet").num_rows == len(rows)
    assert (tmp_path / "results" / "demo.png").stat().st_size > 1000
    assert (tmp_path / "video" / "camera02.mp4").is_file()  # ci.yaml trains on cameras 0 and 1

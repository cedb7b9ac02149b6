"""The per-frame result path's JSON form: built field by field (not `dataclasses.asdict`), it must stay
exactly what asdict gave, for every kind of app, and must not share mutable parts with the result."""
from __future__ import annotations

import json
from dataclasses import asdict, fields

from stemcell.sharing.runtime import AppResult, FrameResult

BOX = {"x0": 1.0, "y0": 2.0, "x1": 30.0, "y1": 40.0, "score": 0.9, "class": "car"}


def _results() -> tuple[AppResult, ...]:
    return (AppResult("presence", True, 0.8, True, True),
            AppResult("count", False, 0.2, False, False, count=1),
            AppResult("detect", True, 0.9, True, True, count=1, boxes=(BOX,), counts={"car": 1}))


def test_app_result_json_equals_asdict_for_every_kind_of_app() -> None:
    for result in _results():
        assert result.as_dict() == asdict(result)
        assert list(result.as_dict()) == [f.name for f in fields(AppResult)]  # a new field must be added here too
        assert json.dumps(result.as_dict()) == json.dumps(asdict(result))


def test_frame_result_json_is_a_copy() -> None:
    frame = FrameResult(12.5, _results(), {"presence": 3})
    out = frame.as_dict()
    assert out == {"frame_ts": 12.5, "results": [asdict(r) for r in _results()], "model_versions": {"presence": 3}}
    out["results"][2]["boxes"][0]["score"] = 0.0
    out["results"][2]["counts"]["car"] = 7
    assert frame.results[2].boxes[0]["score"] == 0.9 and frame.results[2].counts == {"car": 1}

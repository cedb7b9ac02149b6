"""FrameResult.as_dict, the JSON of every answered frame: the same value `dataclasses.asdict` gives, cheaply."""
from __future__ import annotations

import json
from dataclasses import asdict

from stemcell.sharing.runtime import AppResult, FrameResult


def test_as_dict_is_asdicts_value_for_every_kind_of_app() -> None:
    box = {"x0": 1.0, "y0": 2.0, "x1": 30.5, "y1": 40.0, "score": 0.9, "class": "car"}
    result = FrameResult(12.5, (AppResult("car", True, 0.75, True, True),
                                AppResult("people", False, 0.1, False, False, count=3),
                                AppResult("detect", True, 0.9, True, True, count=2, boxes=(box, box), counts={"car": 2})),
                         {"car": 0, "people": 2, "detect": 1})
    expected = {"frame_ts": 12.5, "results": [asdict(r) for r in result.results], "model_versions": dict(result.model_versions)}
    assert result.as_dict() == expected
    assert json.dumps(result.as_dict()) == json.dumps(expected)  # what the HTTP edge serves, field order included
    assert list(result.as_dict()["results"][2]) == ["app", "label", "score", "event_active", "fresh", "count", "boxes",
                                                     "counts"]

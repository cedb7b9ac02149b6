"""The typed errors cross Ray's boundary intact: returned as values (pickled) or raised (wrapped)."""
from __future__ import annotations

import pickle

import pytest
from ray.exceptions import RayTaskError

from stemcell.control.errors import Moved, Overloaded, UnknownCamera
from stemcell.state import UnknownCameraError

CASES = [UnknownCamera("cam-1"), Overloaded("queue full", 0.25), Overloaded("restarting"), Moved("executor-0-g1")]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_a_returned_error_keeps_its_class_and_fields(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and vars(copy) == vars(error) and str(copy) == str(error)


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_a_raised_error_is_still_caught_by_its_class(error: Exception) -> None:
    """What `ray.get` raises for an actor's exception: the pickled RayTaskError, made an instance of
    the cause's class on the caller's side."""
    wrapped = pickle.loads(pickle.dumps(RayTaskError("infer", "Traceback ...", error))).as_instanceof_cause()
    with pytest.raises(type(error)) as caught:
        raise wrapped
    for field, value in vars(error).items():  # the fields a caller reads (camera_id, retry_after_s, actor)
        assert getattr(caught.value, field) == value


def test_messages_and_the_stores_error() -> None:
    assert str(UnknownCamera("cam-1")) == "unknown camera 'cam-1'"
    assert isinstance(UnknownCameraError("cam-1"), UnknownCamera)  # one class for "no such camera" everywhere
    assert not isinstance(UnknownCamera("x"), ValueError)  # never mistaken for a rejected request (422)
    assert "follow the routes" in str(Moved("w-g1"))

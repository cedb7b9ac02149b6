"""The errors that cross actor calls, as classes (callers match the class, never the message).

Each keeps its fields as attributes, which Exception's own pickling restores, so it arrives intact
whether an actor returns it as a value (`infer_many`'s per-item results) or raises it (Ray re-raises
a raised one as a subclass of both `RayTaskError` and this class, so `except UnknownCamera` matches).
"""
from __future__ import annotations


class UnknownCamera(LookupError):
    """The camera is not registered here (an executor that restarted, or a camera removed meanwhile)."""

    def __init__(self, camera_id: str) -> None:
        super().__init__(camera_id)
        self.camera_id = camera_id

    def __str__(self) -> str:
        return f"unknown camera {self.camera_id!r}"


class Overloaded(RuntimeError):
    """No capacity right now (a full queue, every executor restarting, a worker moving): answer 503
    with Retry-After when `retry_after_s` is known."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Moved(RuntimeError):
    """This actor no longer serves its role (it is draining, or was checkpointed for a successor):
    re-read the published routes and retry on the actor they name (`app.routes.RouteFollower`)."""

    def __init__(self, actor: str) -> None:
        super().__init__(actor)
        self.actor = actor

    def __str__(self) -> str:
        return f"actor {self.actor!r} has moved its role to a successor; follow the routes"

"""Prometheus metrics of the HTTP layer (`ray.util.metrics`, exported on each node's metrics port).

Created lazily in the replica process (Ray metrics must be made where they are recorded) and
shared by the middleware and the routes.  Tag values are bounded: route *templates* (not raw
paths), registered camera ids, app names, status codes.
"""
from __future__ import annotations

import functools

from ray.util.metrics import Counter, Histogram

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class ServeMetrics:
    def __init__(self) -> None:
        self.frames = Counter("stemcell_http_frames_total", "Frames answered over HTTP, per camera.", tag_keys=("camera",))
        self.latency = Histogram("stemcell_request_latency_ms", "HTTP request latency in the ingress replica.",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route",))
        self.positives = Counter("stemcell_app_positives_total", "Frames an app labelled positive.",
                                 tag_keys=("camera", "app"))
        self.errors = Counter("stemcell_http_errors_total", "HTTP answers with status >= 400.",
                              tag_keys=("route", "status"))
        self.failovers = Counter("stemcell_executor_failovers_total",
                                 "Times an executor slot was found down and its cameras moved to another slot.",
                                 tag_keys=("executor",))

    def record_results(self, camera_id: str, results: list[dict]) -> None:
        """Count frames and per-app positives of one answered request."""
        self.frames.inc(len(results), tags={"camera": camera_id})
        positives: dict[str, int] = {}
        for frame in results:
            for r in frame["results"]:
                if r["label"]:
                    positives[r["app"]] = positives.get(r["app"], 0) + 1
        for app, count in positives.items():
            self.positives.inc(count, tags={"camera": camera_id, "app": app})

    def record_failover(self, executor_role: str) -> None:
        self.failovers.inc(1, tags={"executor": executor_role})

    def record_request(self, route: str, status: int, latency_ms: float) -> None:
        self.latency.observe(latency_ms, tags={"route": route})
        if status >= 400:
            self.errors.inc(1, tags={"route": route, "status": str(status)})


@functools.cache
def metrics() -> ServeMetrics:
    return ServeMetrics()

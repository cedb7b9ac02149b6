"""One local Ray instance for the whole integration session (starting Ray costs seconds on 2 cores).

Ray gets one *logical* GPU, so fractional `num_gpus` shares are scheduled exactly as on a GPU node
(and the actors fall back to the CPU inside).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray

from tests.helpers.http_app import admin, cam1, server  # noqa: F401 - the test_serve_http*.py modules' fixtures

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()

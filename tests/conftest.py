"""Tests marked `gpu` need CUDA: skipped where there is none (CI), run by scripts/device_check.sh."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (scripts/device_check.sh runs it on a GPU machine)")
    for item in gpu_items:
        item.add_marker(skip)

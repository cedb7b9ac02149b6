"""Headless matplotlib setup: benchmarks and the demo run on servers with no display."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

__all__ = ["plt"]

"""The one retry delay rule: exponential backoff, capped, jittered down at random.

Shared by the HTTP client's retries (`stemcell.client`) and the pull ingest's reconnects
(`stemcell.ingest.policy`): jitter keeps a fleet that failed together from retrying together.
"""
from __future__ import annotations


def jittered_backoff(base_s: float, cap_s: float, attempt: int, jitter: float, draw: float) -> float:
    """`base_s * 2**attempt` capped at `cap_s`, minus up to `jitter` of it (`draw` uniform in [0, 1))."""
    return min(cap_s, base_s * 2.0 ** attempt) * (1.0 - jitter * draw)

"""Events: the unit Mainstream's event F1 counts (a detection anywhere inside an event finds it)."""
from __future__ import annotations

import numpy as np

from stemcell.world.datatypes import Event


def extract_events(presence_1d: np.ndarray) -> list[Event]:
    """Maximal runs of True in a 1-D presence signal, as half-open frame ranges, in order."""
    signal = np.asarray(presence_1d)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D presence signal, got shape {signal.shape}")
    padded = np.concatenate(([False], signal.astype(bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [Event(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2])]

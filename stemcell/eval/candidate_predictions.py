"""Per-frame predictions of every candidate in a package on a labelled stream, sharing stems.

Every candidate of every app starts from the same base, so the base's activation at each cut is
computed once per frame and each candidate runs only its own upper part on it (the same saving the
stem tree gives at serving time).
"""
from __future__ import annotations

import numpy as np
import torch

from stemcell.models import to_input
from stemcell.package import MPackage


@torch.inference_mode()
def candidate_predictions(package: MPackage, frames: np.ndarray, chunk: int = 256) -> dict[tuple[str, int], np.ndarray]:
    """{(app, branchpoint): bool per frame} for every candidate in `package`, on uint8 `frames`."""
    manifest = package.manifest
    models = {(c.app, c.branchpoint): package.app_model(c.app, c.branchpoint) for c in manifest.candidates}
    cuts = sorted({b for _, b in models})
    out: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in models}
    for start in range(0, len(frames), chunk):
        x = to_input(frames[start : start + chunk], manifest.base.input_size)
        activations, done = {0: x}, 0
        for b in cuts:
            x = package.base.features(x, done, b)
            activations[b], done = x, b
        for (app, b), model in models.items():
            out[(app, b)].append((model.upper_forward(activations[b])[:, 0] > 0).numpy())
    return {key: np.concatenate(parts) for key, parts in out.items()}

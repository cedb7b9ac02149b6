"""Content hashes of segment weights: equal hash <=> byte-identical layer, so it can be stored once."""
from __future__ import annotations

import hashlib

from torch import nn


def segment_hash(module: nn.Module) -> str:
    """sha256 over the module's structure and every state tensor (names, dtypes, shapes, bytes).

    The structure (`repr`, which lists strides, paddings, activations) is included so two segments
    with equal weights but different ops never collide. Parameter names are relative to the module,
    so an identical segment hashes the same wherever it sits in whichever model (Gemel-style merging,
    not only common prefixes).
    """
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()

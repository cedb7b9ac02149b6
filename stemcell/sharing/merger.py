"""Identical-layer merging (Gemel-style): one stored module per distinct weight content.

Two segments merge for free when their structure and weights are byte-identical (`segment_hash`).
That happens in the shared prefix (every app fine-tuned from one base keeps the frozen stem), but also
*after* an app-specific segment: an app that retrained only a middle segment still carries the base's
later segments unchanged. Their activations differ (different inputs) so they run separately, yet
their weights need to be in memory only once. The store is the one owner of those weights.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from stemcell.models import segment_hash

log = logging.getLogger(__name__)


def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer (tied tensors counted once, as torch stores them once)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def module_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class PreparedModule:
    """A module hashed and materialised on the store's device, ready to be committed.

    Preparing is the slow part (hashing, copying to the GPU) and touches no shared state, so it can
    run while inference continues; committing is a dictionary update.
    """

    digest: str  # content hash of the source module (before any dtype change)
    module: nn.Module  # frozen, eval-mode copy on the store's device and dtype


class ModuleStore:
    """Content-addressed, reference-counted modules on one device.

    The store never references a caller's module: it keeps its own frozen copy, so converting to
    fp16 or moving to the GPU cannot alter the package's base model or an app model in training.
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._modules: dict[str, nn.Module] = {}
        self._refs: dict[str, int] = {}

    def prepare(self, module: nn.Module) -> PreparedModule:
        digest = segment_hash(module)
        existing = self._modules.get(digest)
        if existing is not None:  # already stored: no copy needed (commit only bumps the count)
            return PreparedModule(digest, existing)
        clone = copy.deepcopy(module).to(device=self.device, dtype=self.dtype).eval()
        for p in clone.parameters():
            p.requires_grad_(False)
        return PreparedModule(digest, clone)

    def acquire(self, prepared: PreparedModule) -> nn.Module:
        """Take a reference; returns the canonical module for that content."""
        if prepared.digest not in self._modules:
            self._modules[prepared.digest] = prepared.module
            self._refs[prepared.digest] = 0
        self._refs[prepared.digest] += 1
        return self._modules[prepared.digest]

    def release(self, digest: str) -> None:
        """Drop a reference; the module is freed when nothing uses it any more."""
        self._refs[digest] -= 1
        if self._refs[digest] == 0:
            del self._refs[digest], self._modules[digest]
            log.debug("freed module %s", digest[:12])

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, digest: object) -> bool:
        return digest in self._modules

    def refcount(self, digest: str) -> int:
        return self._refs.get(digest, 0)

    def bytes(self) -> int:
        """Bytes of parameters + buffers actually held (each distinct module once)."""
        return sum(module_bytes(m) for m in self._modules.values())

    def params(self) -> int:
        return sum(module_params(m) for m in self._modules.values())

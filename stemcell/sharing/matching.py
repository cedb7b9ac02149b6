"""Which layers of different models could share one copy of their weights (the merging seed's §3.1).

Two layers *match* when their type, tensor shapes and hyper-parameters agree (kernel, stride,
padding, groups, bias, eps, ...): then one set of weights can stand in for both, whatever their
current values. This is structure only: byte-identical weights (`stemcell.sharing.merger`) are the
special case that merges for free; matching layers with *different* weights need joint retraining
(`stemcell.sharing.joint_merge`) before they can be stored once.

Units are either leaf layers (the seed's definition) or whole segments (a segment matches when all
its layers match in order). The report is the seed's Figure 2 (per pair) and Table 3 (per workload).
"""
from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import nn

from stemcell.models import AppModel
from stemcell.package import MPackage
from stemcell.sharing.merger import module_bytes

Granularity = Literal["layer", "segment"]


def layer_signature(module: nn.Module) -> str:
    """Type + hyper-parameters + every state tensor's name, shape and dtype (never the values).

    `repr` of a module lists its type and hyper-parameters recursively (Conv2d(16, 32,
    kernel_size=(3, 3), stride=(2, 2), ...)), which is exactly what must agree for one set of
    weights to replace another; the shapes also cover what `repr` leaves implicit.
    """
    shapes = ";".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in sorted(module.state_dict().items()))
    return hashlib.sha256(f"{module!r}|{shapes}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Unit:
    """One mergeable piece of one model."""

    model: str  # the model's name in the workload
    path: str  # dotted module path inside the model, e.g. "upper.5" or "upper.5.0"
    signature: str  # `layer_signature`: units with equal signatures can share one copy
    bytes: int  # parameters + buffers
    kind: str  # module type name, for reports


def model_units(name: str, model: AppModel, granularity: Granularity = "segment") -> list[Unit]:
    """The units of one model, in execution order. Heads are left out: a head is the model's own
    output (its task), so sharing it would make two apps one."""
    segments = [(f"stem.{i}", s) for i, s in enumerate(model.stem)]
    segments += [(f"upper.{i}", s) for i, s in enumerate(model.upper)]
    units = []
    for path, segment in segments:
        pieces: Iterator[tuple[str, nn.Module]] = iter([(path, segment)])
        if granularity == "layer":
            pieces = ((f"{path}.{sub}" if sub else path, m) for sub, m in segment.named_modules()
                      if not list(m.children()) and module_bytes(m))
        for p, m in pieces:
            units.append(Unit(name, p, layer_signature(m), module_bytes(m), type(m).__name__))
    return units


@dataclass(frozen=True)
class PairShare:
    """Seed Figure 2: what two models could share."""

    a: str  # first model
    b: str  # second model
    matched_units: int  # units of `a` with a counterpart in `b` (one-to-one)
    units_a: int
    units_b: int
    bytes_a: int
    bytes_b: int
    shareable_bytes: int  # bytes one of the pair would no longer store
    savings: float  # shareable / (bytes_a + bytes_b)


@dataclass(frozen=True)
class WorkloadShare:
    """Seed Table 3: the whole workload with every matching unit stored once per position."""

    models: int
    bytes_no_sharing: int
    bytes_max_sharing: int  # per signature, as many copies as the model that uses it most needs
    savings: float


@dataclass(frozen=True)
class MatchReport:
    granularity: Granularity
    pairs: tuple[PairShare, ...]
    workload: WorkloadShare


def _multiset_overlap_bytes(a: list[Unit], b: list[Unit]) -> tuple[int, int]:
    """One-to-one matching by signature: (matched units, their bytes). Equal signature => equal bytes."""
    size = {u.signature: u.bytes for u in (*a, *b)}
    common = Counter(u.signature for u in a) & Counter(u.signature for u in b)
    return sum(common.values()), sum(size[s] * n for s, n in common.items())


def match_report(models: Mapping[str, AppModel], granularity: Granularity = "segment") -> MatchReport:
    """Shareable bytes per pair and for the whole workload (structure only, see module docstring)."""
    units = {name: model_units(name, m, granularity) for name, m in models.items()}
    totals = {name: sum(u.bytes for u in us) for name, us in units.items()}
    pairs = []
    for a, b in itertools.combinations(units, 2):
        matched, shared = _multiset_overlap_bytes(units[a], units[b])
        pairs.append(PairShare(a, b, matched, len(units[a]), len(units[b]), totals[a], totals[b], shared,
                               shared / (totals[a] + totals[b]) if totals[a] + totals[b] else 0.0))
    size = {u.signature: u.bytes for us in units.values() for u in us}
    copies: Counter[str] = Counter()
    for us in units.values():
        copies |= Counter(u.signature for u in us)  # max count over models
    no_sharing = sum(totals.values())
    max_sharing = sum(size[s] * n for s, n in copies.items())
    workload = WorkloadShare(len(models), no_sharing, max_sharing, 1 - max_sharing / no_sharing if no_sharing else 0.0)
    return MatchReport(granularity, tuple(pairs), workload)


def package_models(package: MPackage) -> dict[str, AppModel]:
    """Every candidate of an M-Package as `app@branchpoint`: the workload `match_report` reads."""
    return {f"{c.app}@{c.branchpoint}": package.app_model(c.app, c.branchpoint) for c in package.manifest.candidates}

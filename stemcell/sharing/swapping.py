"""Layer swapping under a memory cap: what still does not fit after merging is streamed in per batch.

The stem tree's weights stay in host memory (pinned on CUDA). A residency plan keeps the most-used
layers on the device for good (a layer used by many apps would otherwise be copied for each batch);
every other layer is copied in just before it runs, in the order the tree executes, on a separate
copy stream so that copying layer k+1 overlaps computing layer k (double buffering: two swapped
layers in flight at most). On the CPU the "copy" is a plain clone, which keeps the bookkeeping (and
its tests) identical without a GPU. It is done in line: with a copy thread layer swap measured
0.52-0.67x whole-model swap, against 1.32x in line (separate runs on a shared 2-core box: a per-layer
hand-off costs more than the memcpy, the clone competes with compute for the same cores, and there
is no copy engine to overlap with). Nor can the CPU show the PCIe cost: a
host memcpy is far cheaper per byte than a host-to-device copy, so CPU frames/s understate what
swapping costs on a GPU, and `copied_bytes` per batch is the portable measure.

The seed's baseline, whole-model swapping, is `ModelSwapExecutor`: each model's full weights are
copied in before it runs (the most-used models resident), which pays again for every layer models
share. Both run the same modules through `torch.func.functional_call`, so their results equal a
fully resident tree's.
"""
from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from stemcell.models import AppModel
from stemcell.sharing.stem_tree import LeafKey, Observer, PreparedBranch, Rows, StemTree, TreeNode

log = logging.getLogger(__name__)
Tensors = dict[str, torch.Tensor]


class MemoryCapTooSmall(ValueError):
    """Not even the swapping buffers fit: the plan must be refused or changed (see `memory_fit`)."""


@dataclass(frozen=True)
class LayerUse:
    key: str  # what is stored once (a module digest, or a model for whole-model swapping)
    bytes: int  # its weights
    uses: int  # executions per batch when every app is due (apps depending on it)


@dataclass(frozen=True)
class ResidencyPlan:
    resident: frozenset[str]  # kept on the device
    swapped: frozenset[str]  # copied in per use
    resident_bytes: int
    staging_bytes: int  # the `slots` largest swapped items (in use + prefetching)
    cap_bytes: int
    slots: int  # swapped items in flight at once: 2 overlaps copy and compute, 1 does not

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.staging_bytes


def _staging(sizes: Sequence[int], slots: int = 2) -> int:
    return sum(sorted(sizes, reverse=True)[:slots])


def plan_residency(items: Sequence[LayerUse], cap_bytes: int, slots: int = 2) -> ResidencyPlan:
    """Most-used first (then largest, see `_plan`): keep an item resident while the
    resident bytes plus the staging buffers the remaining swapped items need stay within the cap.

    When `slots` staging buffers do not fit, fewer are planned (1: no copy/compute overlap) before
    giving up: a slower plan beats no plan.
    """
    for n in range(slots, 0, -1):
        try:
            return _plan(items, cap_bytes, n)
        except MemoryCapTooSmall:
            if n == 1:
                raise
    raise ValueError(f"slots must be >= 1, got {slots}")


def _plan(items: Sequence[LayerUse], cap_bytes: int, slots: int) -> ResidencyPlan:
    """Greedy by uses (each resident byte saves `uses` copied bytes per batch), then largest first: of
    equally used layers the large ones save the most copying and shrink the staging buffers."""
    resident: set[str] = set()
    used = 0
    for item in sorted(items, key=lambda i: (-i.uses, -i.bytes, i.key)):
        rest = [i.bytes for i in items if i.key not in resident and i.key != item.key]
        if used + item.bytes + _staging(rest, slots) <= cap_bytes:
            resident.add(item.key)
            used += item.bytes
    swapped = frozenset(i.key for i in items if i.key not in resident)
    staging = _staging([i.bytes for i in items if i.key in swapped], slots)
    if used + staging > cap_bytes:
        raise MemoryCapTooSmall(f"cap of {cap_bytes} bytes cannot hold even {slots} swap buffers ({staging} bytes)")
    return ResidencyPlan(frozenset(resident), swapped, used, staging, cap_bytes, slots)


def module_tensors(module: nn.Module) -> Tensors:
    """Every parameter and buffer by name: what `functional_call` needs to run `module` elsewhere."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


Ready = Callable[[], list[Tensors]]  # waits for a copy started by `_Copier.start`, returns the copies


class _Copier:
    """Host -> device copies: pinned sources and a side stream on CUDA, plain clones on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.copied_bytes = 0

    def host(self, module: nn.Module) -> Tensors:
        return {k: (t.detach().pin_memory() if self.cuda else t.detach()) for k, t in module_tensors(module).items()}

    def start(self, host: Sequence[Tensors]) -> Ready:
        """Begin copying while the caller computes; call the result when the copies are needed."""
        self.copied_bytes += sum(t.numel() * t.element_size() for h in host for t in h.values())
        if self.stream is None:
            clones = [{k: t.clone() for k, t in h.items()} for h in host]
            return lambda: clones
        # sources are pinned and never written: no need to wait for compute
        with torch.cuda.stream(self.stream):
            out = [{k: t.to(self.device, non_blocking=True) for k, t in h.items()} for h in host]
            event = torch.cuda.Event()
            event.record(self.stream)

        def ready() -> list[Tensors]:
            """Make the compute stream wait for the copy, and keep the memory alive until it used it."""
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for h in out:
                for t in h.values():
                    t.record_stream(stream)
            return out
        return ready

    def resident(self, module: nn.Module) -> nn.Module:
        """A device copy kept for good, called directly (no per-call re-parametrisation)."""
        return copy.deepcopy(module).to(self.device)


def _digest_uses(tree: StemTree) -> list[LayerUse]:
    uses: dict[str, int] = {}
    size: dict[str, int] = {}
    for node in tree.nodes():
        uses[node.digest] = uses.get(node.digest, 0) + len(node.leaves)
        size[node.digest] = sum(t.numel() * t.element_size() for t in module_tensors(node.module).values())
    return [LayerUse(d, size[d], uses[d]) for d in uses]


class SwappingStemTree(StemTree):
    """A stem tree whose weights live on the host and are streamed to `device` within `cap_bytes`.

    Build it like a `StemTree` (leaves are added the same way); the residency plan is (re)made on
    the first forward after the tree changed. Classifier heads are not fused here (the fused cache
    would pin every head on the device regardless of the plan); each runs as its own layer.
    """

    def __init__(self, num_segments: int, device: torch.device | str, cap_bytes: int,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(num_segments, "cpu", dtype)
        self.compute_device = torch.device(device)
        self.cap_bytes = cap_bytes
        self.plan: ResidencyPlan | None = None
        self.swap_log: list[TreeNode] = []  # swapped nodes in the order their copies were issued
        self._copier = _Copier(self.compute_device)
        self._resident: dict[str, nn.Module] = {}
        self._host: dict[str, Tensors] = {}
        self._queue: deque[TreeNode] = deque()
        self._inflight: dict[TreeNode, Ready] = {}

    @property
    def device(self) -> torch.device:
        return self.compute_device

    @property
    def copied_bytes(self) -> int:
        return self._copier.copied_bytes

    def add(self, key: LeafKey, branch: PreparedBranch | AppModel) -> None:
        super().add(key, branch)
        self.plan = None

    def remove(self, key: LeafKey) -> bool:
        self.plan = None
        return super().remove(key)

    def replan(self) -> ResidencyPlan:
        self.plan = plan_residency(_digest_uses(self), self.cap_bytes)
        modules = {node.digest: node.module for node in self.nodes()}
        self._resident = {d: self._copier.resident(modules[d]) for d in self.plan.resident}
        self._host = {d: self._copier.host(modules[d]) for d in self.plan.swapped}
        log.info("swapping plan: %d layers resident (%d bytes), %d swapped (staging %d bytes), cap %d bytes",
                 len(self.plan.resident), self.plan.resident_bytes, len(self.plan.swapped), self.plan.staging_bytes,
                 self.cap_bytes)
        return self.plan

    def forward(self, x: torch.Tensor, rows: Rows, observer: Observer | None = None) -> dict[LeafKey, torch.Tensor]:
        if self.plan is None:
            self.replan()
        return super().forward(x, rows, observer)

    def _fused_heads(self, node: TreeNode) -> None:
        return None

    def _run(self, node: TreeNode, act: torch.Tensor, node_rows: Mapping[TreeNode, torch.Tensor],
             *rest: Any) -> None:
        if node is self.root:  # one forward starts: its swapped nodes, in the order they will run
            assert self.plan is not None
            self._queue = deque(n for n in execution_order(self.root, node_rows, self.num_segments)
                                if n.digest in self.plan.swapped)
            self._inflight.clear()
        super()._run(node, act, node_rows, *rest)

    def _module_for(self, node: TreeNode, inp: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The resident device copy, or the node's weights copied in (prefetching the next one)."""
        resident = self._resident.get(node.digest)
        if resident is not None:
            return resident
        if node not in self._inflight:  # first swapped node of the forward: nothing prefetched it
            self._inflight[node] = self._copier.start([self._host[node.digest]])
            self.swap_log.append(node)
        assert self._queue and self._queue[0] is node, "swapped nodes must run in the planned order"
        (tensors,) = self._inflight.pop(node)()
        self._queue.popleft()
        if self._queue and self.plan is not None and self.plan.slots > 1:  # next layer copies while this computes
            nxt = self._queue[0]
            self._inflight[nxt] = self._copier.start([self._host[nxt.digest]])
            self.swap_log.append(nxt)
        return lambda x: functional_call(node.module, tensors, (x,))


def execution_order(root: TreeNode, node_rows: Mapping[TreeNode, torch.Tensor],
                    num_segments: int) -> Iterator[TreeNode]:
    """The nodes a forward runs, in `StemTree._run`'s depth-first order (heads unfused)."""
    for child in root.children.values():
        if child in node_rows:
            yield child
            if child.depth < num_segments:
                yield from execution_order(child, node_rows, num_segments)


class ModelSwapExecutor:
    """The whole-model swap baseline over the leaves of a (host) stem tree: each model's full path is
    copied in before it runs, the next model's copy overlapping the current one's compute when two
    models fit in the cap (one at a time, no overlap, when only one does)."""

    def __init__(self, tree: StemTree, device: torch.device | str, cap_bytes: int) -> None:
        self.tree = tree
        self.device = torch.device(device)
        self._copier = _Copier(self.device)
        paths = {key: tree.path(key) for key in tree.keys()}
        self._host = {key: [self._copier.host(n.module) for n in path] for key, path in paths.items()}
        items = [LayerUse(f"{k[0]}/{k[1]}", sum(t.numel() * t.element_size() for h in hs for t in h.values()), 1)
                 for k, hs in self._host.items()]
        self.plan = plan_residency(items, cap_bytes)
        self._resident = {k: [self._copier.resident(n.module) for n in p] for k, p in paths.items()
                          if f"{k[0]}/{k[1]}" in self.plan.resident}
        self._paths = paths

    @property
    def copied_bytes(self) -> int:
        return self._copier.copied_bytes

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, rows: Rows) -> dict[LeafKey, torch.Tensor]:
        keys = [k for k in rows if torch.as_tensor(rows[k]).numel()]
        x = x.to(self.device, self.tree.dtype or x.dtype)
        swapped = [k for k in keys if k not in self._resident]
        pending: dict[LeafKey, Ready] = {}
        out = {}
        for key in keys:
            weights: Sequence[nn.Module | Tensors] | None = self._resident.get(key)
            if weights is None:
                if key not in pending:
                    pending[key] = self._copier.start(self._host[key])
                weights = pending.pop(key)()
                after = swapped.index(key) + 1
                if self.plan.slots > 1 and after < len(swapped):  # the next model copies while this one runs
                    pending[swapped[after]] = self._copier.start(self._host[swapped[after]])
            act = x.index_select(0, torch.as_tensor(rows[key], dtype=torch.long).reshape(-1).to(x.device))
            for node, tensors in zip(self._paths[key], weights):
                act = tensors(act) if isinstance(tensors, nn.Module) else functional_call(node.module, tensors, (act,))
            out[key] = act.float()
        return out

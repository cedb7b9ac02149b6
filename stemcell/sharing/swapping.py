"""Layer swapping under a memory cap: what still does not fit after merging is streamed in per batch.

The stem tree's weights stay in host memory, each swapped layer packed into one flat buffer (pinned
on CUDA). A residency plan keeps the most-used layers on the device for good (a merged layer used
by six models would otherwise be copied six times per batch); every other layer is copied in just
before it runs, in the order the tree executes, into one of two preallocated device slots, so that
copying layer k+1 (a side stream on CUDA) overlaps computing layer k. Each layer is one `copy_` of
its flat buffer into a slot, and runs as a ready module whose tensors are views into that slot: no
allocation, no per-call re-parametrisation (`functional_call` cost more than a small layer's
compute on the CPU). On the CPU the copy is the same memcpy into a preallocated buffer, in line: a
copy thread measured slower on a shared 2-core box (the hand-off costs more than the memcpy, and
there is no copy engine to overlap with). A host memcpy is far cheaper per byte than PCIe, so CPU
frames/s understate what copying costs on a GPU; `copied_bytes` per batch is the portable measure.

The seed's baseline, whole-model swapping, is `ModelSwapExecutor`: every model is its own unit, so
its full weights (merged layers included) are copied in before it runs, with the same slots, the
same flat buffers and the same copy path, and models that fit stay resident. Both return what a
fully resident tree returns.
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

from stemcell.models import AppModel
from stemcell.sharing.stem_tree import LeafKey, Observer, PreparedBranch, Rows, StemTree, TreeNode

log = logging.getLogger(__name__)
Tensors = dict[str, torch.Tensor]
_ALIGN = 64  # bytes: every tensor of a flat buffer starts aligned, so any dtype can view it


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
    staging_bytes: int  # `slots` buffers, each as large as the largest swapped item
    cap_bytes: int
    slots: int  # swapped items in flight at once: 2 overlaps copy and compute, 1 does not

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.staging_bytes


def _staging(sizes: Sequence[int], slots: int) -> int:
    return slots * max(sizes, default=0)


def plan_residency(items: Sequence[LayerUse], cap_bytes: int, slots: int = 2) -> ResidencyPlan:
    """The plan with `slots` staging buffers (copy overlapping compute) or, when that does not fit or
    one buffer copies at most half as many bytes per batch, with one (copy then compute: a batch takes
    compute + copy instead of max(compute, copy), which still wins when copying dominates)."""
    plans = []
    for n in range(slots, 0, -1):
        try:
            plans.append(_plan(items, cap_bytes, n))
        except MemoryCapTooSmall:
            continue
    if not plans:
        raise MemoryCapTooSmall(f"cap of {cap_bytes} bytes cannot hold one swap buffer beside what must stay "
                                f"({max((i.bytes for i in items), default=0)} bytes for the largest item)")
    fewer = [p for p in plans[1:] if 2 * _copied(items, p) <= _copied(items, plans[0])]
    return fewer[-1] if fewer else plans[0]


def _copied(items: Sequence[LayerUse], plan: ResidencyPlan) -> int:
    return sum(i.bytes * i.uses for i in items if i.key in plan.swapped)


def _plan(items: Sequence[LayerUse], cap_bytes: int, slots: int) -> ResidencyPlan:
    """For each size limit of what may be swapped (larger items must stay, the slots hold `limit`
    bytes each), keep the rest resident greedily by uses (each resident byte saves `uses` copied bytes
    per batch; of equally used layers the larger first); the limit whose plan copies least wins."""
    best: tuple[int, set[str]] | None = None
    for limit in sorted({i.bytes for i in items} | {0}):
        resident = {i.key for i in items if i.bytes > limit}
        room = cap_bytes - sum(i.bytes for i in items if i.key in resident) - slots * limit
        if room < 0:
            continue
        for item in sorted((i for i in items if i.bytes <= limit), key=lambda i: (-i.uses, -i.bytes, i.key)):
            if item.bytes <= room:
                resident.add(item.key)
                room -= item.bytes
        copied = sum(i.bytes * i.uses for i in items if i.key not in resident)
        if best is None or copied < best[0]:
            best = (copied, resident)
    if best is None:
        raise MemoryCapTooSmall(f"cap of {cap_bytes} bytes cannot hold {slots} swap buffers beside what must stay")
    resident = best[1]
    swapped = frozenset(i.key for i in items if i.key not in resident)
    used = sum(i.bytes for i in items if i.key in resident)
    return ResidencyPlan(frozenset(resident), swapped, used, _staging([i.bytes for i in items if i.key in swapped],
                                                                      slots), cap_bytes, slots)


def module_tensors(module: nn.Module) -> Tensors:
    """Every parameter and buffer by name: what a layer's copy must carry."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass(frozen=True)
class FlatLayer:
    """A module's weights packed into one host buffer (one copy per swap), and where each tensor lies in it."""

    module: nn.Module  # the host module (structure; its own tensors are not used for swapped runs)
    host: torch.Tensor  # uint8, pinned on CUDA
    layout: tuple[tuple[str, torch.dtype, torch.Size, int], ...]  # (name, dtype, shape, byte offset)
    weight_bytes: int  # the tensors' own bytes (the flat buffer adds alignment padding)

    @property
    def nbytes(self) -> int:
        return self.host.numel()

    @classmethod
    def pack(cls, module: nn.Module, pin: bool) -> FlatLayer:
        tensors = module_tensors(module)
        layout, offset = [], 0
        for name, t in tensors.items():
            layout.append((name, t.dtype, t.shape, offset))
            offset += -(-_nbytes(t) // _ALIGN) * _ALIGN
        host = torch.zeros(offset, dtype=torch.uint8, pin_memory=pin)
        flat = cls(module, host, tuple(layout), sum(_nbytes(t) for t in tensors.values()))
        for (name, *_), view in zip(layout, flat.views(host)):
            view.copy_(tensors[name].detach())
        return flat

    def views(self, buffer: torch.Tensor) -> Iterator[torch.Tensor]:
        for _, dtype, shape, offset in self.layout:
            size = max(1, shape.numel()) * torch.empty((), dtype=dtype).element_size()
            yield buffer[offset:offset + size].view(dtype).view(shape)

    def bound(self, buffer: torch.Tensor) -> nn.Module:
        """A copy of the module whose every tensor is a view into `buffer` (it owns no memory): once
        the flat weights are copied there, calling it runs the layer."""
        clone = copy.deepcopy(self.module)
        for (name, *_), view in zip(self.layout, self.views(buffer)):
            owner_name, _, attr = name.rpartition(".")
            owner = clone.get_submodule(owner_name)
            if attr in owner._parameters:
                owner._parameters[attr] = nn.Parameter(view, requires_grad=False)
            else:
                owner._buffers[attr] = view
        return clone


Ready = Callable[[], None]  # makes the compute stream wait for a copy started by `_Slots.start`


class _Slots:
    """Preallocated device buffers that swapped layers are copied into, used round-robin.

    On CUDA the copy runs on a side stream from pinned memory and first waits until the compute
    that last read the slot is done (`release`); on the CPU it is a memcpy in line.
    """

    def __init__(self, device: torch.device, count: int, nbytes: int) -> None:
        self.device = device
        self.buffers = [torch.empty(nbytes, dtype=torch.uint8, device=device) for _ in range(count)]
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._freed: list[torch.cuda.Event | None] = [None] * count
        self._next = 0
        self.copied_bytes = 0

    def start(self, flat: FlatLayer) -> tuple[int, Ready]:
        """Begin copying `flat` into the next slot while the caller computes; returns the slot and a
        callable to call before running it."""
        slot = self._next
        self._next = (slot + 1) % len(self.buffers)
        dst = self.buffers[slot][:flat.nbytes]
        self.copied_bytes += flat.weight_bytes
        if self.stream is None:
            dst.copy_(flat.host)
            return slot, _nothing
        freed = self._freed[slot]
        with torch.cuda.stream(self.stream):
            if freed is not None:
                self.stream.wait_event(freed)
            dst.copy_(flat.host, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return slot, lambda: torch.cuda.current_stream(self.device).wait_event(done)

    def run(self, slot: int, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """`module` (bound to `slot`), marking the slot free for the next copy once its compute is queued."""
        if self.stream is None:
            return module

        def call(x: torch.Tensor) -> torch.Tensor:
            out = module(x)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._freed[slot] = event
            return out
        return call


def _nothing() -> None:
    return None


class _Swapper:
    """Resident device modules and slot-bound modules for swapped items, from one residency plan."""

    def __init__(self, items: Mapping[str, nn.Module], uses: Mapping[str, int], device: torch.device,
                 cap_bytes: int) -> None:
        pin = device.type == "cuda"
        flats = {key: FlatLayer.pack(m, pin) for key, m in items.items()}
        self.plan = plan_residency([LayerUse(k, f.nbytes, uses[k]) for k, f in flats.items()], cap_bytes)
        self.resident = {k: copy.deepcopy(items[k]).to(device) for k in self.plan.resident}
        self.flats = {k: flats[k] for k in self.plan.swapped}
        size = max((f.nbytes for f in self.flats.values()), default=0)
        self.slots = _Slots(device, self.plan.slots, size)
        self.bound = {k: [f.bound(b) for b in self.slots.buffers] for k, f in self.flats.items()}

    def start(self, key: str) -> tuple[int, Ready]:
        return self.slots.start(self.flats[key])

    def module(self, key: str, slot: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.slots.run(slot, self.bound[key][slot])


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
        self.swap_log: list[TreeNode] = []  # swapped nodes in the order their copies were issued
        self._swapper: _Swapper | None = None
        self._queue: deque[TreeNode] = deque()
        self._inflight: dict[TreeNode, tuple[int, Ready]] = {}
        self._copied_before = 0  # bytes copied under earlier plans

    @property
    def device(self) -> torch.device:
        return self.compute_device

    @property
    def plan(self) -> ResidencyPlan | None:
        return None if self._swapper is None else self._swapper.plan

    @property
    def copied_bytes(self) -> int:
        return self._copied_before + (0 if self._swapper is None else self._swapper.slots.copied_bytes)

    def add(self, key: LeafKey, branch: PreparedBranch | AppModel) -> None:
        super().add(key, branch)
        self._changed()

    def remove(self, key: LeafKey) -> bool:
        self._changed()
        return super().remove(key)

    def _changed(self) -> None:
        if self._swapper is not None:
            self._copied_before += self._swapper.slots.copied_bytes
        self._swapper = None

    def replan(self) -> ResidencyPlan:
        modules: dict[str, nn.Module] = {}
        uses: dict[str, int] = {}
        for node in self.nodes():
            modules[node.digest] = node.module
            uses[node.digest] = uses.get(node.digest, 0) + len(node.leaves)
        self._changed()
        self._swapper = _Swapper(modules, uses, self.compute_device, self.cap_bytes)
        plan = self._swapper.plan
        log.info("swapping plan: %d layers resident (%d bytes), %d swapped (%d slots, %d bytes), cap %d bytes",
                 len(plan.resident), plan.resident_bytes, len(plan.swapped), plan.slots, plan.staging_bytes,
                 self.cap_bytes)
        return plan

    def forward(self, x: torch.Tensor, rows: Rows, observer: Observer | None = None) -> dict[LeafKey, torch.Tensor]:
        if self._swapper is None:
            self.replan()
        return super().forward(x, rows, observer)

    def _fused_heads(self, node: TreeNode) -> None:
        return None

    def _run(self, node: TreeNode, act: torch.Tensor, node_rows: Mapping[TreeNode, torch.Tensor],
             *rest: Any) -> None:
        if node is self.root:  # one forward starts: its swapped nodes, in the order they will run
            assert self._swapper is not None
            swapped = self._swapper.flats
            self._queue = deque(n for n in execution_order(self.root, node_rows, self.num_segments)
                                if n.digest in swapped)
            self._inflight.clear()
            if self._queue:  # the first copy overlaps the resident layers that run before it
                self._prefetch(self._queue[0])
        super()._run(node, act, node_rows, *rest)

    def _prefetch(self, node: TreeNode) -> None:
        assert self._swapper is not None
        self._inflight[node] = self._swapper.start(node.digest)
        self.swap_log.append(node)

    def _module_for(self, node: TreeNode, inp: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The resident device copy, or the node's weights copied into a slot (prefetching the next one)."""
        swapper = self._swapper
        assert swapper is not None
        resident = swapper.resident.get(node.digest)
        if resident is not None:
            return resident
        assert self._queue and self._queue[0] is node, "swapped nodes must run in the planned order"
        slot, ready = self._inflight.pop(self._queue.popleft())
        ready()
        if self._queue and swapper.plan.slots > 1:  # the next layer copies while this one computes
            self._prefetch(self._queue[0])
        module = swapper.module(node.digest, slot)
        if self._queue and swapper.plan.slots == 1:  # one slot: the next copy waits for this compute
            return _then(module, lambda: self._prefetch(self._queue[0]))
        return module


def _then(module: Callable[[torch.Tensor], torch.Tensor], after: Callable[[], None]) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        after()
        return out
    return call


def execution_order(root: TreeNode, node_rows: Mapping[TreeNode, torch.Tensor],
                    num_segments: int) -> Iterator[TreeNode]:
    """The nodes a forward runs, in `StemTree._run`'s depth-first order (heads unfused)."""
    for child in root.children.values():
        if child in node_rows:
            yield child
            if child.depth < num_segments:
                yield from execution_order(child, node_rows, num_segments)


class ModelSwapExecutor:
    """The whole-model swap baseline over the leaves of a (host) stem tree: each model is one unit (its
    whole path, merged layers included) copied in before it runs, the next model's copy overlapping
    the current one's compute when two fit in the cap; models that fit beside the slots stay resident."""

    def __init__(self, tree: StemTree, device: torch.device | str, cap_bytes: int) -> None:
        self.tree = tree
        self.device = torch.device(device)
        models = {_unit(k): nn.Sequential(*(n.module for n in tree.path(k))) for k in tree.keys()}
        self._swapper = _Swapper(models, dict.fromkeys(models, 1), self.device, cap_bytes)
        self.plan = self._swapper.plan

    @property
    def copied_bytes(self) -> int:
        return self._swapper.slots.copied_bytes

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, rows: Rows) -> dict[LeafKey, torch.Tensor]:
        wanted = {k: torch.as_tensor(r, dtype=torch.long).reshape(-1) for k, r in rows.items()}
        keys = [k for k, r in wanted.items() if r.numel()]
        x = x.to(self.device, self.tree.dtype or x.dtype)
        swapper = self._swapper
        swapped = [k for k in keys if _unit(k) in swapper.flats]
        pending = {swapped[0]: swapper.start(_unit(swapped[0]))} if swapped else {}
        out = {}
        for key in keys:
            unit = _unit(key)
            model: Callable[[torch.Tensor], torch.Tensor] | None = swapper.resident.get(unit)
            if model is None:
                slot, ready = pending.pop(key)
                ready()
                model = swapper.module(unit, slot)
                after = swapped.index(key) + 1
                if after < len(swapped):  # two slots: the next model copies while this one runs; one: after it
                    nxt = swapped[after]
                    if swapper.plan.slots > 1:
                        pending[nxt] = swapper.start(_unit(nxt))
                    else:
                        model = _then(model, lambda n=nxt: pending.update({n: swapper.start(_unit(n))}))
            out[key] = model(x.index_select(0, wanted[key].to(x.device))).float()
        return out


def _unit(key: LeafKey) -> str:
    return f"{key[0]}/{key[1]}"

"""Residency plans and the copy path of layer swapping (see `stemcell.sharing.swapping`).

A plan says which items (layers, or whole models for the baseline) stay on the device and which are
copied in per batch, within a memory cap that also holds the staging slots. A swapped item is packed
once into one flat host buffer (pinned on CUDA) and bound to every slot as a module whose tensors
are views into that slot, so a swap is one `copy_` and the layer then runs as an ordinary module.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

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


def _padded(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def flat_bytes(module: nn.Module) -> int:
    """The size of `module`'s flat buffer (its tensors, each starting aligned)."""
    return sum(_padded(_nbytes(t)) for t in module_tensors(module).values())


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
            offset += _padded(_nbytes(t))
        host = torch.zeros(offset, dtype=torch.uint8, pin_memory=pin)
        flat = cls(module, host, tuple(layout), sum(_nbytes(t) for t in tensors.values()))
        for (name, *_), view in zip(layout, flat.views(host)):
            view.copy_(tensors[name].detach())
        return flat

    def views(self, buffer: torch.Tensor) -> Iterator[torch.Tensor]:
        for _, dtype, shape, offset in self.layout:
            size = max(1, shape.numel()) * dtype.itemsize
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


Ready = Callable[[], None]  # makes the compute stream wait for a copy started by `Slots.start`


class Slots:
    """Preallocated device buffers that swapped layers are copied into, used round-robin.

    On CUDA the copy runs on a side stream from pinned memory and first waits until the compute
    that last read the slot is done (recorded by `run`); on the CPU it is a memcpy in line.
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


class Swapper:
    """Resident device modules and slot-bound modules for swapped items, from one residency plan."""

    def __init__(self, items: Mapping[str, nn.Module], uses: Mapping[str, int], device: torch.device,
                 cap_bytes: int) -> None:
        self.plan = plan_residency([LayerUse(k, flat_bytes(m), uses[k]) for k, m in items.items()], cap_bytes)
        self.resident = {k: copy.deepcopy(items[k]).to(device) for k in self.plan.resident}
        self.flats = {k: FlatLayer.pack(items[k], pin=device.type == "cuda") for k in self.plan.swapped}
        size = max((f.nbytes for f in self.flats.values()), default=0)
        self.slots = Slots(device, self.plan.slots, size)
        self.bound = {k: [f.bound(b) for b in self.slots.buffers] for k, f in self.flats.items()}

    def start(self, key: str) -> tuple[int, Ready]:
        return self.slots.start(self.flats[key])

    def module(self, key: str, slot: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.slots.run(slot, self.bound[key][slot])


Layer = Callable[[torch.Tensor], torch.Tensor]


def then(module: Layer, after: Callable[[], None]) -> Layer:
    """`module`, then `after` once its compute is queued (with one slot the next copy must come after it)."""
    def call(x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        after()
        return out
    return call

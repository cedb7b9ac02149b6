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

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from stemcell.models import AppModel
from stemcell.sharing.stem_tree import LeafKey, Observer, PreparedBranch, Rows, StemTree, TreeNode
from stemcell.sharing.swap_plan import ResidencyPlan, Ready, Swapper, then

if TYPE_CHECKING:
    from stemcell.accel import DevicePath

log = logging.getLogger(__name__)


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
        # the last swapped nodes in the order their copies were issued (bounded: executors run for months)
        self.swap_log: deque[TreeNode] = deque(maxlen=4096)
        self._swapper: Swapper | None = None
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

    def swapped_bytes(self) -> int:
        """Weights kept on the host under the current plan (each copied in whenever it runs)."""
        return 0 if self._swapper is None else sum(f.weight_bytes for f in self._swapper.flats.values())

    def add(self, key: LeafKey, branch: PreparedBranch | AppModel) -> None:
        super().add(key, branch)
        self._changed()

    def remove(self, key: LeafKey) -> bool:
        self._changed()
        return super().remove(key)

    def _changed(self) -> None:
        if self._swapper is not None:
            self._copied_before += self._swapper.slots.copied_bytes
            if self.compute_device.type == "cuda":  # kernels in flight may still read the slots being freed
                torch.cuda.synchronize(self.compute_device)
        self._swapper = None

    def replan(self) -> ResidencyPlan:
        modules: dict[str, nn.Module] = {}
        uses: dict[str, int] = {}
        for node in self.nodes():
            modules[node.digest] = node.module
            uses[node.digest] = uses.get(node.digest, 0) + len(node.leaves)
        self._changed()
        self._swapper = Swapper(modules, uses, self.compute_device, self.cap_bytes)
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
            return then(module, lambda: self._prefetch(self._queue[0]))
        return module


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
        self._swapper = Swapper(models, dict.fromkeys(models, 1), self.device, cap_bytes)
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
                        model = then(model, lambda n=nxt: pending.update({n: swapper.start(_unit(n))}))
            out[key] = model(x.index_select(0, wanted[key].to(x.device))).float()
        return out


def _unit(key: LeafKey) -> str:
    return f"{key[0]}/{key[1]}"


def stem_tree_for(num_segments: int, path: DevicePath, weight_cap_bytes: int | None) -> StemTree:
    """An executor's tree: a plain `StemTree`, or under a weight cap one that keeps what does not fit
    on the host and swaps it in per batch (its segments run in torch: an engine per segment would
    hold every segment's weights on the device, which is what the cap is there to prevent)."""
    if weight_cap_bytes is None:
        return StemTree(num_segments, path.device, path.dtype, path.runner)
    return SwappingStemTree(num_segments, path.device, weight_cap_bytes, path.dtype)


def swap_view(tree: StemTree) -> dict[str, int] | None:
    """What a swapping tree keeps where (the plan view's and the Planner's `swap` entry); None otherwise."""
    if not isinstance(tree, SwappingStemTree):
        return None
    plan = tree.plan or tree.replan()
    return {"cap_bytes": tree.cap_bytes, "resident_bytes": plan.resident_bytes, "staging_bytes": plan.staging_bytes,
            "resident_layers": len(plan.resident), "swapped_layers": len(plan.swapped), "slots": plan.slots,
            "swapped_bytes": tree.swapped_bytes(), "copied_bytes": tree.copied_bytes}

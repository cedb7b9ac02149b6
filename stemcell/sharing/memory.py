"""Exact memory accounting of a stem tree: weights with vs without merging, activations, CUDA peak.

Weights are counted byte-exactly from the tensors actually held (parameters + buffers). Activations
are the segment outputs a forward really produces (observed, not estimated); "peak" is what the
depth-first execution keeps alive at once: the input plus the outputs on one root-to-node path.
Temporaries inside a segment (and the allocator's slack) are only visible in the CUDA peak.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass

import torch

from stemcell.sharing.merger import module_bytes, module_params
from stemcell.sharing.swapping import swap_view
from stemcell.sharing.stem_tree import LeafKey, Rows, StemTree, TreeNode


def ideal_savings(segment_params: Sequence[int], apps: Sequence[tuple[Collection[int], int]]) -> float:
    """Analytic savings from parameter counts alone, for apps fine-tuned from one base.

    `apps[i] = (segments app i holds its own copy of, its head's parameters)`. Without merging every
    app stores the whole backbone and its head; with merging each base segment that some app still
    uses is stored once, plus each app's own segments and head. Buffers are ignored (a bound that the
    exact byte count should approach).
    """
    total = sum(segment_params)
    no_merge = sum(total + head for _, head in apps)
    if no_merge == 0:
        return 0.0
    used_from_base = {s for s in range(len(segment_params)) if any(s not in own for own, _ in apps)}
    merged = sum(segment_params[s] for s in used_from_base)
    merged += sum(sum(segment_params[s] for s in own) + head for own, head in apps)
    return 1.0 - merged / no_merge


def own_segments(tree: StemTree, base_digests: Sequence[str]) -> dict[LeafKey, tuple[set[int], int]]:
    """For each leaf: which of its segments differ from the base's, and its head's parameter count."""
    out = {}
    for key in tree.keys():
        *segments, head = tree.path(key)
        own = {i for i, node in enumerate(segments) if node.digest != base_digests[i]}
        out[key] = (own, module_params(head.module))
    return out


@dataclass(frozen=True)
class ActivationBytes:
    merged_total: int  # every segment output of one tree forward
    merged_peak: int  # input + largest root-to-node sum of outputs (depth-first execution)
    no_merge_total: int  # same frames through each leaf's model separately
    no_merge_peak: int  # the largest single model's input + outputs (models run one after another)


def activation_bytes(tree: StemTree, x: torch.Tensor, rows: Rows) -> ActivationBytes:
    """Run one real forward and account every node output it produced."""
    out_bytes: dict[TreeNode, int] = {}
    out_rows: dict[TreeNode, int] = {}

    def observe(node: TreeNode, output: torch.Tensor, _seconds: float) -> None:
        out_bytes[node] = output.numel() * output.element_size()
        out_rows[node] = len(output)

    tree.forward(x, rows, observe)
    if not out_bytes:
        return ActivationBytes(0, 0, 0, 0)
    dtype = tree.dtype or x.dtype
    row_in = x[0].numel() * torch.empty((), dtype=dtype).element_size()
    all_rows = {r for v in rows.values() for r in torch.as_tensor(v).reshape(-1).tolist()}

    def path_sum(node: TreeNode) -> int:
        total = 0
        while node is not tree.root:
            total += out_bytes[node]
            node = node.parent  # type: ignore[assignment]
        return total

    merged_peak = row_in * len(all_rows) + max(path_sum(n) for n in out_bytes)
    per_leaf = []
    for key, r in rows.items():
        n = torch.as_tensor(r).numel()
        if n and key in tree:
            per_row = sum(out_bytes[node] // out_rows[node] for node in tree.path(key))
            per_leaf.append((row_in + per_row) * n)
    return ActivationBytes(
        merged_total=sum(out_bytes.values()),
        merged_peak=merged_peak,
        no_merge_total=sum(per_leaf) - row_in * sum(torch.as_tensor(r).numel() for r in rows.values()),
        no_merge_peak=max(per_leaf),
    )


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak CUDA bytes allocated while `fn` runs (None off CUDA): the ground truth for a budget."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


@dataclass(frozen=True)
class MemoryReport:
    leaves: int  # (camera, app) models served
    tree_nodes: int  # segment/head executions per frame when every leaf is due
    distinct_modules: int  # modules actually stored after merging
    bytes_no_merge: int  # every leaf storing its full model (S segments + head)
    bytes_merged: int  # what the tree's store holds
    savings: float  # 1 - merged / no_merge
    savings_ideal: float  # analytic bound from parameter counts (`ideal_savings`)
    params_no_merge: int
    params_merged: int
    batch_size: int  # frames in the probe forward
    activation: ActivationBytes
    cuda_max_memory_allocated: int | None  # peak during the probe forward (weights included); None on CPU
    swap: dict[str, int] | None = None  # a swapping tree's plan (`swapping.swap_view`); None: all resident

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def memory_report(
    tree: StemTree,
    x: torch.Tensor,
    rows: Rows,
    base_digests: Sequence[str],
    segment_params: Sequence[int],
) -> MemoryReport:
    """Weights (exact), activations (observed on `x`), CUDA peak of that forward, and the ideal."""
    paths = {key: tree.path(key) for key in tree.keys()}
    no_merge = sum(module_bytes(node.module) for path in paths.values() for node in path)
    params_no_merge = sum(module_params(node.module) for path in paths.values() for node in path)
    merged = tree.store.bytes()
    activation = activation_bytes(tree, x, rows)
    peak = cuda_peak_bytes(lambda: tree.forward(x, rows), tree.device)
    return MemoryReport(
        leaves=len(paths),
        tree_nodes=sum(1 for _ in tree.nodes()),
        distinct_modules=len(tree.store),
        bytes_no_merge=no_merge,
        bytes_merged=merged,
        savings=1.0 - merged / no_merge if no_merge else 0.0,
        savings_ideal=ideal_savings(segment_params, list(own_segments(tree, base_digests).values())),
        params_no_merge=params_no_merge,
        params_merged=tree.store.params(),
        batch_size=len(x),
        activation=activation,
        cuda_max_memory_allocated=peak,
        swap=swap_view(tree),
    )

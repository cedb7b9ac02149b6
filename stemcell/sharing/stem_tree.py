"""The stem tree: app models from one base merged into a prefix tree of content-hashed segments.

Every (camera, app) is a leaf whose path is its S segments then its head. Two paths share a node
while their segments are byte-identical *and* their parents are the same node (identical input), so
a frame runs each shared segment once and fans out where the apps' weights start to differ
(Mainstream's shared stem). Storage is deduplicated separately and more aggressively by the
`ModuleStore` (identical weights in different positions are stored once, Gemel-style).

One forward serves a batch mixing frames of many cameras: each node runs only on the rows of the
leaves below it that are due on that frame, so a camera's frames never touch another camera's
branches and an app skipping a frame (frame-rate stride) costs nothing.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stemcell.models import AppModel, ClassifierHead
from stemcell.sharing.merger import ModuleStore, PreparedModule

LeafKey = tuple[str, str]  # (camera_id, app)
Observer = Callable[["TreeNode", torch.Tensor, float], None]  # (node, output, seconds), after each node ran
Rows = Mapping[LeafKey, "torch.Tensor | Sequence[int]"]
# (segment digest, one frame's input shape) -> a compiled stand-in for that segment, or None (run torch)
EngineLookup = Callable[[str, tuple[int, ...]], "Callable[[torch.Tensor], torch.Tensor] | None"]


@dataclass(eq=False)
class TreeNode:
    """One segment (or head) at one position of the tree; equality is identity."""

    uid: int  # creation counter: a stable id while the node lives
    digest: str  # content hash of `module`
    module: nn.Module  # the store's canonical module (may be shared with other nodes)
    depth: int  # 0-based segment index; S for heads; -1 for the root (the input)
    parent: TreeNode | None
    children: dict[str, TreeNode] = field(default_factory=dict)  # by child digest
    leaves: set[LeafKey] = field(default_factory=set)  # leaves whose path runs through it (empty for the root)

    @property
    def name(self) -> str:
        return f"n{self.uid}/d{self.depth}/{self.digest[:8]}"


@dataclass(frozen=True)
class PreparedBranch:
    """An app model hashed and copied to the device, ready to commit into a tree atomically."""

    segments: tuple[PreparedModule, ...]  # S segments, stem then upper
    head: PreparedModule


class StemTree:
    """Prefix tree of segments over (camera, app) leaves; all weights live in one `ModuleStore`."""

    def __init__(
        self, num_segments: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
        engines: EngineLookup | None = None,
    ) -> None:
        self.num_segments = num_segments
        self.engines = engines  # TensorRT engines by segment content: identical segments share one
        self.store = ModuleStore(device, dtype)
        self._uids = itertools.count(1)
        self.root = TreeNode(0, "input", nn.Identity(), -1, None)
        self._heads: dict[LeafKey, TreeNode] = {}
        self._fused: dict[TreeNode, _FusedHeads | None] = {}  # per parent node, cleared on any change

    @property
    def device(self) -> torch.device:
        return self.store.device

    @property
    def dtype(self) -> torch.dtype | None:
        return self.store.dtype

    # -- building ---------------------------------------------------------------------------------

    def prepare(self, model: AppModel) -> PreparedBranch:
        """Hash and materialise `model`'s modules without touching the tree (safe during inference)."""
        segments = [*model.stem, *model.upper]
        if len(segments) != self.num_segments:
            raise ValueError(f"app model has {len(segments)} segments, the tree expects {self.num_segments}")
        return PreparedBranch(tuple(self.store.prepare(s) for s in segments), self.store.prepare(model.head))

    def add(self, key: LeafKey, branch: PreparedBranch | AppModel) -> None:
        """Insert a leaf, reusing every node whose parent and content match; replaces `key` if present.

        The new path is inserted before the old one is released, so nodes they share are never freed
        and re-created (no needless copies during a weight swap).
        """
        if isinstance(branch, AppModel):
            branch = self.prepare(branch)
        self._fused.clear()
        old = self._heads.get(key)
        node = self.root
        new_path: set[TreeNode] = set()
        for depth, prepared in enumerate((*branch.segments, branch.head)):
            child = node.children.get(prepared.digest)
            if child is None:
                module = self.store.acquire(prepared)
                child = TreeNode(next(self._uids), prepared.digest, module, depth, node)
                node.children[prepared.digest] = child
            node = child
            node.leaves.add(key)
            new_path.add(node)
        if old is not None:
            self._release_path(old, key, keep=new_path)
        self._heads[key] = node

    def remove(self, key: LeafKey) -> bool:
        head = self._heads.pop(key, None)
        if head is None:
            return False
        self._fused.clear()
        self._release_path(head, key)
        return True

    def _release_path(self, head: TreeNode, key: LeafKey, keep: set[TreeNode] | None = None) -> None:
        """Drop `key` from its old path bottom-up, freeing emptied nodes, up to the first node of `keep`.

        Paths are prefix-closed (a shared node's ancestors are shared too), so stopping at the first
        node also on the new path leaves the whole shared prefix untouched.
        """
        node: TreeNode | None = head
        keep = keep or set()
        while node is not None and node is not self.root and node not in keep:
            node.leaves.discard(key)
            parent = node.parent
            if not node.leaves:
                assert parent is not None
                del parent.children[node.digest]
                self.store.release(node.digest)
            node = parent

    # -- inspection -------------------------------------------------------------------------------

    def keys(self) -> list[LeafKey]:
        return list(self._heads)

    def __contains__(self, key: object) -> bool:
        return key in self._heads

    def nodes(self) -> Iterator[TreeNode]:
        """Every node except the root, depth-first."""
        stack = list(reversed(self.root.children.values()))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children.values()))

    def path(self, key: LeafKey) -> list[TreeNode]:
        """The leaf's S segment nodes then its head node."""
        node: TreeNode | None = self._heads[key]
        out = []
        while node is not None and node is not self.root:
            out.append(node)
            node = node.parent
        return out[::-1]

    def rows_for_cameras(self, cameras: Sequence[str]) -> dict[LeafKey, torch.Tensor]:
        """Every leaf on every row of its own camera (`cameras[i]` is row i's camera)."""
        by_camera: dict[str, list[int]] = {}
        for i, camera in enumerate(cameras):
            by_camera.setdefault(camera, []).append(i)
        return {
            key: torch.tensor(by_camera[key[0]], dtype=torch.long) for key in self._heads if key[0] in by_camera
        }

    # -- execution --------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, rows: Rows, observer: Observer | None = None) -> dict[LeafKey, torch.Tensor]:
        """Logits for each requested leaf on its rows of `x` (in the order given), computing each
        node once on the union of the rows below it.

        `observer`, when given, is called after each node with its output and wall time (the GPU is
        synchronised around each node then, so only pass one when measuring).
        """
        wanted = {key: torch.as_tensor(r, dtype=torch.long).reshape(-1) for key, r in rows.items()}
        wanted = {key: r for key, r in wanted.items() if r.numel()}
        if unknown := [k for k in wanted if k not in self._heads]:
            raise KeyError(f"no such leaves in the stem tree: {unknown}")
        if wanted:
            every = torch.cat(list(wanted.values()))
            if int(every.min()) < 0 or int(every.max()) >= len(x):
                raise IndexError(f"rows {every.tolist()} out of range for a batch of {len(x)}")
        node_rows = self._node_rows(wanted)
        out: dict[LeafKey, torch.Tensor] = {}
        if not node_rows:
            return out
        root_rows = node_rows[self.root]
        x = x.to(self.device, self.dtype or x.dtype)
        x = x if len(root_rows) == len(x) else x.index_select(0, root_rows.to(x.device))
        sync = observer is not None and self.device.type == "cuda"
        self._run(self.root, x, node_rows, wanted, out, observer, sync)
        return out

    def _node_rows(self, wanted: Mapping[LeafKey, torch.Tensor]) -> dict[TreeNode, torch.Tensor]:
        """Sorted unique rows each node must process: the union over the requested leaves below it."""
        parts: dict[TreeNode, list[torch.Tensor]] = {}
        for key, r in wanted.items():
            node: TreeNode | None = self._heads[key]
            while node is not None:
                parts.setdefault(node, []).append(r)
                node = node.parent
        return {node: torch.unique(torch.cat(p)) for node, p in parts.items()}

    def _run(
        self,
        node: TreeNode,
        act: torch.Tensor,
        node_rows: Mapping[TreeNode, torch.Tensor],
        wanted: Mapping[LeafKey, torch.Tensor],
        out: dict[LeafKey, torch.Tensor],
        observer: Observer | None,
        sync: bool,
    ) -> None:
        """Depth-first: only the activations on the current root-to-node path are alive at once."""
        here = node_rows[node]
        fused = self._fused_heads(node)
        if fused is not None and any(h in node_rows for h in fused.heads):
            started = self._tick(sync)
            results = fused(act)
            seconds = self._tick(sync) - started
            for head, result in zip(fused.heads, results):
                if head in node_rows:
                    if observer is not None:
                        observer(head, result, seconds / len(fused.heads))
                    self._emit(head, result, here, wanted, out)
        for child in node.children.values():
            rows = node_rows.get(child)
            if rows is None or (fused is not None and child in fused.heads):
                continue
            inp = act if len(rows) == len(here) else act.index_select(0, _positions(here, rows, act.device))
            started = self._tick(sync)
            result = self._module_for(child, inp)(inp)
            if observer is not None:
                observer(child, result, self._tick(sync) - started)
            if child.depth == self.num_segments:
                self._emit(child, result, rows, wanted, out)
            else:
                self._run(child, result, node_rows, wanted, out, observer, sync)

    def _module_for(self, node: TreeNode, inp: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A segment's ready engine when there is one, else its torch module (heads stay in torch)."""
        if self.engines is None or node.depth >= self.num_segments:
            return node.module
        return self.engines(node.digest, tuple(inp.shape[1:])) or node.module

    def _tick(self, sync: bool) -> float:
        if sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @staticmethod
    def _emit(
        head: TreeNode, result: torch.Tensor, rows: torch.Tensor, wanted: Mapping[LeafKey, torch.Tensor],
        out: dict[LeafKey, torch.Tensor],
    ) -> None:
        """Hand each requested leaf of `head` its own rows of the head's output (computed on `rows`)."""
        for key in head.leaves:
            if key in wanted:
                out[key] = result.index_select(0, _positions(rows, wanted[key], result.device)).float()

    def _fused_heads(self, node: TreeNode) -> _FusedHeads | None:
        """Sibling classifier heads of `node`, run as one pool + one matmul (cached until the tree changes).

        With max sharing every app's head hangs off the same node: N heads would cost N pools and N
        small matmuls (N kernel launches each on a GPU); fused they cost about one.
        """
        if node not in self._fused:
            heads = [c for c in node.children.values() if _FusedHeads.fits(c.module)]
            self._fused[node] = _FusedHeads(heads) if len(heads) > 1 else None
        return self._fused[node]


class _FusedHeads:
    """Global-average-pool + linear heads with one input, evaluated together.

    The concatenated weight is a small cache (heads are ~0.1% of a model), rebuilt after any change.
    """

    def __init__(self, heads: list[TreeNode]) -> None:
        self.heads = heads
        fcs = [h.module.fc for h in heads]
        self.weight = torch.cat([fc.weight for fc in fcs])
        self.bias = torch.cat([fc.bias for fc in fcs])
        self.splits = [fc.out_features for fc in fcs]

    @staticmethod
    def fits(module: nn.Module) -> bool:
        return (
            isinstance(module, ClassifierHead)
            and module.pool.output_size in (1, (1, 1))
            and module.fc.bias is not None
        )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(pooled, self.weight, self.bias).split(self.splits, dim=1)


def _positions(sorted_rows: torch.Tensor, subset: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where each of `subset`'s row ids sits in `sorted_rows` (a superset, sorted)."""
    return torch.searchsorted(sorted_rows, subset).to(device)

"""Shared-stem execution: the stem tree, identical-layer merging, memory accounting, the runtime
that serves many cameras' apps through one tree, and the cross-camera batcher."""
from stemcell.sharing.batcher import BatcherStats, CrossCameraBatcher, DeviceOutOfMemory, Overloaded
from stemcell.sharing.memory import ActivationBytes, MemoryReport, activation_bytes, ideal_savings, memory_report
from stemcell.sharing.merger import ModuleStore, module_bytes, module_params
from stemcell.sharing.runtime import AppResult, FrameResult, InferRequest, StemRuntime, frame_stride
from stemcell.sharing.stem_tree import LeafKey, PreparedBranch, StemTree, TreeNode
from stemcell.sharing.synthetic import perturbed_app_model

__all__ = [
    "ActivationBytes",
    "AppResult",
    "BatcherStats",
    "CrossCameraBatcher",
    "DeviceOutOfMemory",
    "FrameResult",
    "InferRequest",
    "LeafKey",
    "MemoryReport",
    "ModuleStore",
    "Overloaded",
    "PreparedBranch",
    "StemRuntime",
    "StemTree",
    "TreeNode",
    "activation_bytes",
    "frame_stride",
    "ideal_savings",
    "memory_report",
    "module_bytes",
    "module_params",
    "perturbed_app_model",
]

"""Model library: base networks cut into ordered segments at named branchpoints.

An app model (Mainstream) = a frozen *stem* (the base's first b segments, shared with every other
app fine-tuned from the same base) + trainable copies of the remaining segments + a per-app head.
"""
from stemcell.models.app_model import AppModel, make_app_model, make_task_model
from stemcell.models.hashing import segment_hash
from stemcell.models.inputs import normalised, to_input
from stemcell.models.registry import build_base, list_bases, register_base
from stemcell.models.segmented import ClassifierHead, SegmentedNet
from stemcell.models.weights import load_safetensors, load_torchvision_checkpoint, save_safetensors

__all__ = [
    "AppModel",
    "ClassifierHead",
    "SegmentedNet",
    "build_base",
    "list_bases",
    "load_safetensors",
    "load_torchvision_checkpoint",
    "make_app_model",
    "make_task_model",
    "register_base",
    "save_safetensors",
    "segment_hash",
    "normalised",
    "to_input",
]

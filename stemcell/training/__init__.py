"""M-Trainer logic: pretraining the base, fine-tuning candidates at branchpoints, profiling latency."""
from stemcell.training.data import LabelledFrames, world_frames
from stemcell.training.finetune import CandidateResult, CandidateSpec, finetune_candidate
from stemcell.training.latency import LatencyProfile, profile_latency
from stemcell.training.metrics import BinaryMetrics, binary_metrics
from stemcell.training.pretrain import pretrain_base

__all__ = [
    "BinaryMetrics",
    "CandidateResult",
    "CandidateSpec",
    "LabelledFrames",
    "LatencyProfile",
    "binary_metrics",
    "finetune_candidate",
    "pretrain_base",
    "profile_latency",
    "world_frames",
]

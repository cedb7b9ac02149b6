"""Continuous learning: teacher labels, AMS retraining and sparse updates, the RECL model zoo."""
from stemcell.learning.ams import AmsConfig
from stemcell.learning.ams import AmsTrainer
from stemcell.learning.ams import AppJob
from stemcell.learning.ams import CameraSession
from stemcell.learning.ams import Published
from stemcell.learning.buffer import BufferItem
from stemcell.learning.buffer import SampleBuffer
from stemcell.learning.codec import SparseUpdate
from stemcell.learning.codec import TensorSpec
from stemcell.learning.codec import UpdateFormatError
from stemcell.learning.codec import UpdateMismatchError
from stemcell.learning.codec import apply_update
from stemcell.learning.codec import catch_up_update
from stemcell.learning.codec import decode
from stemcell.learning.codec import encode
from stemcell.learning.codec import full_update
from stemcell.learning.codec import make_update
from stemcell.learning.codec import merge_updates
from stemcell.learning.coordinate_descent import GradientGuidedAdam
from stemcell.learning.rates import ASRConfig
from stemcell.learning.rates import ASRState
from stemcell.learning.rates import ATRConfig
from stemcell.learning.rates import ATRState
from stemcell.learning.rates import LabelledSample
from stemcell.learning.rates import RatesConfig
from stemcell.learning.rates import RatesState
from stemcell.learning.rates import label_change
from stemcell.learning.rates import rates_init
from stemcell.learning.rates import step as rates_step
from stemcell.learning.retrain import ContinualLearner
from stemcell.learning.retrain import RetrainResult
from stemcell.learning.retrain import buffer_batches
from stemcell.learning.retrain import retrain
from stemcell.learning.teachers import FrameMeta
from stemcell.learning.teachers import ModelTeacher
from stemcell.learning.teachers import OracleTeacher
from stemcell.learning.teachers import Teacher
from stemcell.learning.teachers import presence
from stemcell.learning.versions import VersionStore

__all__ = [
    "ASRConfig",
    "AmsConfig",
    "AmsTrainer",
    "AppJob",
    "CameraSession",
    "Published",
    "VersionStore",
    "ASRState",
    "ATRConfig",
    "ATRState",
    "BufferItem",
    "ContinualLearner",
    "FrameMeta",
    "GradientGuidedAdam",
    "LabelledSample",
    "ModelTeacher",
    "OracleTeacher",
    "RatesConfig",
    "RatesState",
    "RetrainResult",
    "SampleBuffer",
    "SparseUpdate",
    "Teacher",
    "TensorSpec",
    "UpdateFormatError",
    "UpdateMismatchError",
    "apply_update",
    "buffer_batches",
    "catch_up_update",
    "decode",
    "encode",
    "full_update",
    "label_change",
    "make_update",
    "merge_updates",
    "presence",
    "rates_init",
    "rates_step",
    "retrain",
]

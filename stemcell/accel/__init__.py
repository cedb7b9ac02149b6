"""The GPU path: precision/backend decisions, TensorRT engines and their cache, the device path of
one executor (stream, pinned staging, OOM recovery). Pure logic plus torch; `tensorrt` is imported
only where an engine is built or loaded."""
from stemcell.accel.device_path import DevicePath
from stemcell.accel.engine_cache import EngineCache, EngineKey, write_readable
from stemcell.accel.engines import EngineManager
from stemcell.accel.precision import DeviceFacts, ExecutionPlan, plan_execution, resolve_execution
from stemcell.control.contracts import EngineStats

__all__ = [
    "DeviceFacts", "DevicePath", "EngineCache", "EngineKey", "EngineManager", "EngineStats", "ExecutionPlan",
    "plan_execution", "resolve_execution", "write_readable",
]

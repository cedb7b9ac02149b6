"""cluster/check_cluster.py's verdict on running executors (the Ray calls themselves run on a cluster)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_cluster", ROOT / "cluster" / "check_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_executor_on_a_gpu_node_serving_on_the_cpu_fails_loudly() -> None:
    problems = _module().executor_problems([
        {"name": "stemcell-executor-0", "node_id": "a" * 40, "node_gpus": 1.0, "device": "cuda:0"},
        {"name": "stemcell-executor-1", "node_id": "b" * 40, "node_gpus": 1.0, "device": "cpu"},
        {"name": "stemcell-executor-2", "node_id": "c" * 40, "node_gpus": 0, "device": "cpu"},  # a CPU node: fine
        {"name": "stemcell-executor-3", "node_id": "d" * 40, "node_gpus": 4.0, "error": "GetTimeoutError: 10 s"},
    ])
    assert len(problems) == 2
    assert "stemcell-executor-1" in problems[0] and "bbbbbbbbbbbb" in problems[0] and "no CUDA" in problems[0]
    assert "stemcell-executor-3" in problems[1] and "GetTimeoutError" in problems[1]


def test_all_executors_on_cuda_pass() -> None:
    module = _module()
    assert module.executor_problems([]) == []
    assert module.executor_problems([{"name": "e", "node_id": "n", "node_gpus": 1, "device": "cuda"}]) == []

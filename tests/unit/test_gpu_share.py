"""GPU shares that hold: MPS thread percentage in the actor's runtime_env, memory cap without CUDA a no-op."""
from __future__ import annotations

from pathlib import Path

import pytest

from actors.gpu_share import actor_options, enforce_share, mps_detected, mps_thread_percentage, runtime_env_for


def test_mps_detection_prefers_the_explicit_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-pipe"
    assert mps_detected({"STEMCELL_MPS": "1"}, missing)
    assert not mps_detected({"STEMCELL_MPS": "0", "CUDA_MPS_PIPE_DIRECTORY": "/x"}, tmp_path)
    assert mps_detected({"CUDA_MPS_PIPE_DIRECTORY": "/x"}, missing)
    assert mps_detected({}, tmp_path)  # the daemon's pipe folder exists
    assert not mps_detected({}, missing)


def test_thread_percentage_rounds_up_without_float_noise() -> None:
    assert [mps_thread_percentage(s) for s in (0.25, 0.3, 0.001, 0.999, 1.0)] == [25, 30, 1, 100, 100]
    with pytest.raises(ValueError):
        mps_thread_percentage(0.0)


def test_actor_options_carry_share_and_mps() -> None:
    opts = actor_options(0.3, gpus_available=True, mps=True, name="x", runtime_env={"env_vars": {"A": "1"}})
    assert opts["num_gpus"] == 0.3 and opts["name"] == "x"
    assert opts["runtime_env"]["env_vars"] == {"A": "1", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30"}
    assert "runtime_env" not in actor_options(0.3, gpus_available=True, mps=False)
    assert runtime_env_for(1.0, mps=True) is None  # a whole GPU needs no cap
    cpu_only = actor_options(0.3, gpus_available=False, mps=True)
    assert cpu_only["num_gpus"] == 0 and "runtime_env" not in cpu_only


def test_enforce_share_is_a_no_op_without_cuda_or_for_a_whole_gpu() -> None:
    import torch

    assert enforce_share(1.0) is False
    assert enforce_share(0.5) is torch.cuda.is_available()

"""benchmarks/gpu_path.py's sections, run on the CPU with tiny models: the device script's logic
(fallback notes, rows, ratios, co-location) is checked here so a GPU session only measures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_path

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_without_cuda_it_says_so_and_writes_empty_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_path.main(["--out", str(tmp_path / "g.json")]) == 0
    assert "no CUDA" in capsys.readouterr().out
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["rows"] == [] and result["share_enforced"] is None and result["ratio_max_sharing_to_single_gpu"] is None


def test_sections_run_through_the_serving_path(tmp_path: Path) -> None:
    rows, notes = gpu_path.precision_rows(32, 0.0, 1.0, tmp_path, CPU, models=("tiny_cnn",))
    assert {(r["backend"], r["precision"]) for r in rows} == {("torch", "fp32")}  # the others fall back on a CPU
    assert sorted(r["batch"] for r in rows) == list(gpu_path.BATCHES) and all(r["fps"] > 0 for r in rows)
    assert len(notes) == 2 and all("not available" in n for n in notes)
    sharing = gpu_path.sharing_ratios(32, 0.0, CPU, model="tiny_cnn", apps=3, batch=4)
    assert sharing["ratio_max_sharing_to_single_gpu"] > 0 and set(sharing["fps"]) == {"single", "max_sharing", "no_sharing"}
    memory = gpu_path.merged_memory(32, CPU, model="tiny_cnn", apps=2, batch=4)
    assert memory["bytes_merged_cuda"] is None and memory["branchpoint"] == 3  # CUDA peaks only on a GPU
    together = gpu_path.colocated(32, CPU, seconds=0.5, teacher_model="tiny_cnn", student_model="tiny_cnn")
    assert not together["errors"] and together["teacher_frames"] > 0 and together["retrain_steps"] > 0
    assert together["inference_frames"] > 0

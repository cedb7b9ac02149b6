"""Layer and whole-model swapping on a real GPU: pinned host buffers, a copy stream, slots reused
under events (marked `gpu`: skipped without CUDA; scripts/device_check.sh runs them)."""
from __future__ import annotations

import pytest
import torch

from stemcell.models import build_base
from stemcell.sharing import StemTree, perturbed_app_model
from stemcell.sharing.swapping import ModelSwapExecutor, SwappingStemTree

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fraction", [2, 5])  # two slots, then one slot (nearly everything copied)
def test_swapping_on_cuda_equals_resident(fraction: int) -> None:
    base = build_base("tiny_cnn")
    models = [perturbed_app_model(base, 0, seed=k, own=range(4)) for k in range(6)]  # conv5, conv6 shared
    keys = [(f"cam{k // 2}", f"app{k % 2}") for k in range(6)]
    resident, host = StemTree(6, "cuda"), StemTree(6)
    for key, m in zip(keys, models):
        resident.add(key, m)
        host.add(key, m)
    cap = host.store.bytes() // fraction
    layer = SwappingStemTree(6, "cuda", cap)
    for key, m in zip(keys, models):
        layer.add(key, m)
    model_swap = ModelSwapExecutor(host, "cuda", max(cap, 1_000_000))
    x = torch.rand(12, 3, 64, 64)
    rows = resident.rows_for_cameras([f"cam{i % 3}" for i in range(12)])
    want = resident.forward(x, rows)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # as the executors run: on their own stream
        for _ in range(3):  # slots reused across forwards: each copy must wait for the compute before it
            got, whole = layer.forward(x, rows), model_swap.forward(x, rows)
    torch.cuda.synchronize()
    assert layer.plan is not None and layer.plan.swapped and layer.plan.peak_bytes <= cap
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(whole[key], want[key], rtol=1e-4, atol=1e-4)

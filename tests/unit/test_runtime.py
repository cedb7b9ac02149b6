"""StemRuntime (serving semantics) and the cross-camera batcher in front of it."""
from __future__ import annotations

import asyncio
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.models import to_input
from stemcell.package import MPackage, load_package
from stemcell.sharing import CrossCameraBatcher, FrameResult, InferRequest, Overloaded, StemRuntime, frame_stride
from stemcell.control.errors import UnknownCamera
from tests.helpers.builders import tiny_package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root: Path = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(4, 6), apps=("car", "person"))
    return load_package(root)


def _frames(n: int, seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _scores(model: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(to_input(frames, 32)))[:, 0].numpy()


def _app(result: dict, app: str) -> dict:
    return next(r for r in result["results"] if r["app"] == app)


def _per_frame(outcome: list[FrameResult] | Exception, app: str, field: str = "score") -> list:
    """One app's `field` on each frame of a request's outcome (which must not be an error)."""
    assert isinstance(outcome, list), outcome
    return [_app(r.as_dict(), app)[field] for r in outcome]


def test_frame_stride_follows_mainstream() -> None:
    assert frame_stride(10, 5) == 2 and frame_stride(10, 10) == 1 and frame_stride(10, 30) == 1
    assert frame_stride(14, 1) == 14
    with pytest.raises(ValueError):
        frame_stride(10, 0)


def test_batched_cameras_equal_each_app_model_alone(package: MPackage) -> None:
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10}, {"app": "person", "branchpoint": 6, "fps": 10}])
    rt.set_camera("c1", [{"app": "car", "branchpoint": 6, "fps": 10}])
    f0, f1 = _frames(3, 0), _frames(2, 1, size=64)  # different input sizes in one batch
    out0, out1 = rt.infer([InferRequest("c0", f0, [1.0, 2.0, 3.0]), InferRequest("c1", f1)])
    assert isinstance(out0, list) and isinstance(out1, list)
    assert [r.frame_ts for r in out0] == [1.0, 2.0, 3.0] and len(out1) == 2
    for outs, frames, app, b in ((out0, f0, "car", 4), (out0, f0, "person", 6), (out1, f1, "car", 6)):
        np.testing.assert_allclose(_per_frame(outs, app), _scores(package.app_model(app, b), frames), atol=1e-5)
    assert rt.counters["frames"] == 5 and rt.counters["batches"] == 1


def test_apps_below_stream_rate_reuse_their_last_result(package: MPackage) -> None:
    rt = StemRuntime(package)  # package stream: 10 fps
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 5}, {"app": "person", "branchpoint": 6, "fps": 10}])
    frames = _frames(8, 2)
    first = rt.infer([InferRequest("c0", frames[:5])])[0]
    second = rt.infer([InferRequest("c0", frames[5:])])[0]  # the frame counter carries over
    results = [r.as_dict() for r in [*first, *second]]  # type: ignore[misc]
    car = [_app(r, "car") for r in results]
    assert [c["fresh"] for c in car] == [True, False] * 4
    for i in range(1, 8, 2):
        assert car[i]["score"] == car[i - 1]["score"]
    assert all(_app(r, "person")["fresh"] for r in results)
    assert all(c["event_active"] == c["label"] == (c["score"] >= 0.5) for c in car)
    assert rt.counters["app_runs"] == 4 + 8 and rt.counters["app_reuses"] == 4
    # an app added mid-stream analyses the very next frame, then every 4th
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 5}, {"app": "person", "branchpoint": 6, "fps": 2.5}])
    later = rt.infer([InferRequest("c0", _frames(5, 3))])[0]
    assert _per_frame(later, "person", "fresh") == [True, False, False, False, True]


def test_reconfiguration_touches_only_changed_branches(package: MPackage) -> None:
    rt = StemRuntime(package)
    apps = [{"app": "car", "branchpoint": 4, "fps": 10}, {"app": "person", "branchpoint": 6, "fps": 10}]
    assert rt.set_camera("c0", apps)
    assert not rt.set_camera("c0", apps)  # idempotent
    car_path = [n.uid for n in rt.tree.path(("c0", "car"))]
    assert rt.set_camera("c0", [{**apps[0], "fps": 2}, apps[1]])  # only the rate changed: nothing reloaded
    assert [n.uid for n in rt.tree.path(("c0", "car"))] == car_path
    assert rt.cameras()["c0"][0].stride == 5
    assert rt.set_camera("c0", [{"app": "person", "branchpoint": 4, "fps": 10}])  # car dropped, person moved
    assert rt.tree.keys() == [("c0", "person")]
    assert rt.tree.path(("c0", "person"))[4].depth == 4
    assert rt.remove_camera("c0") and not rt.remove_camera("c0")
    assert len(rt.tree.store) == 0


def test_unknown_app_or_branchpoint_is_refused_clearly(package: MPackage) -> None:
    rt = StemRuntime(package)
    with pytest.raises(ValueError, match="unknown app 'bus'"):
        rt.set_camera("c0", [{"app": "bus", "branchpoint": 4, "fps": 10}])
    with pytest.raises(ValueError, match="no candidate at branchpoint 3"):
        rt.set_camera("c0", [{"app": "car", "branchpoint": 3, "fps": 10}])
    with pytest.raises(ValueError, match="lacks 'fps'"):
        rt.set_camera("c0", [{"app": "car", "branchpoint": 4}])
    assert not rt.has_camera("c0")


def test_a_bad_request_fails_alone(package: MPackage) -> None:
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10}])
    good, unknown, bad = rt.infer([
        InferRequest("c0", _frames(2, 4)),
        InferRequest("nope", _frames(1, 5)),
        InferRequest("c0", _frames(2, 6).astype(np.float32)),
    ])
    assert isinstance(good, list) and len(good) == 2
    assert isinstance(unknown, UnknownCamera) and unknown.camera_id == 'nope'
    assert isinstance(bad, ValueError)
    assert rt.counters["frames"] == 2


def _retrained_state(package: MPackage, app: str, b: int, seed: int) -> dict[str, torch.Tensor]:
    model = package.app_model(app, b)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model.trainable_state_dict()


def _model_with(package: MPackage, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = package.app_model("car", 4)
    model.load_trainable_state_dict(state)
    return model


def test_weight_swap_is_versioned_and_idempotent(package: MPackage) -> None:
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10}])
    rt.set_camera("c1", [{"app": "car", "branchpoint": 4, "fps": 10}])
    state = _retrained_state(package, "car", 4, seed=1)
    assert rt.set_app_weights("car", "c0", state, 1) == 1
    assert rt.set_app_weights("car", "c0", state, 1) == 0  # retried delivery: no-op
    frames = _frames(3, 7)
    c0, c1 = rt.infer([InferRequest("c0", frames), InferRequest("c1", frames)])
    np.testing.assert_allclose(_per_frame(c0, "car"), _scores(_model_with(package, state), frames), atol=1e-5)
    np.testing.assert_allclose(_per_frame(c1, "car"), _scores(package.app_model("car", 4), frames), atol=1e-5)
    assert c0[0].model_versions == {"car": 1} and c1[0].model_versions == {"car": 0}  # type: ignore[index]
    with pytest.raises(ValueError, match="do not"):
        rt.set_app_weights("car", None, _retrained_state(package, "car", 6, seed=2), 2)  # b=6 weights for b=4
    assert rt.set_app_weights("car", None, state, 2) == 2  # every camera running car
    with pytest.raises(ValueError, match="not running"):
        rt.set_app_weights("person", None, state, 3)


def test_weight_swap_is_atomic_under_concurrent_inference(package: MPackage) -> None:
    """Every frame's score must come from exactly the weights of the version it reports."""
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10}])
    states = {v: _retrained_state(package, "car", 4, seed=v % 2) for v in range(1, 9)}
    frames = _frames(2, 8)
    want = {v % 2: _scores(_model_with(package, states[v]), frames) for v in (1, 2)}
    seen: list[tuple[int, list[float]]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            out = rt.infer([InferRequest("c0", frames)])[0]
            assert isinstance(out, list)
            seen.append((out[0].model_versions["car"], _per_frame(out, "car")))

    worker = threading.Thread(target=serve)
    worker.start()
    try:
        for v, state in states.items():
            rt.set_app_weights("car", "c0", state, v)
    finally:
        stop.set()
        worker.join()
    swapped = [(v, s) for v, s in seen if v > 0]
    assert swapped, "inference never saw a swapped model"
    for v, scores in swapped:
        np.testing.assert_allclose(scores, want[v % 2], atol=1e-5)


def test_latency_and_memory_are_measured(package: MPackage) -> None:
    rt = StemRuntime(package)
    for camera in ("c0", "c1"):  # the same candidate on two cameras: one path, stored once
        rt.set_camera(camera, [{"app": "car", "branchpoint": 4, "fps": 10}])
    rt.infer([InferRequest("c0", _frames(2, 9)), InferRequest("c1", _frames(2, 10))])
    latency = rt.segment_latency()
    assert len(latency) == len(list(rt.tree.nodes())) == package.base.num_segments + 1
    assert all(row.ewma_ms > 0 for row in latency)
    assert latency[0].segment == "conv1" and latency[0].users == ("c0/car", "c1/car")
    report = rt.memory_report(batch_size=4)
    assert report.bytes_no_merge == 2 * report.bytes_merged and report.savings == pytest.approx(0.5)
    # different cameras' frames differ: weights are shared, activations are not
    assert report.activation.merged_total == report.activation.no_merge_total


# -- cross-camera batcher ----------------------------------------------------------------------


def test_batcher_merges_cameras_into_one_run_and_routes_results() -> None:
    calls: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        calls.append(items)
        return [f"done:{i}" for i in items]

    async def main() -> list[str]:
        batcher: CrossCameraBatcher[str, str] = CrossCameraBatcher(run, max_batch=4, max_wait_ms=60_000)
        results = await asyncio.gather(*(batcher.submit(c, 2) for c in ("c0", "c1", "c2", "c3")))
        stats = batcher.stats()
        assert stats.batches == 2 and stats.mean_batch_frames == 4 and stats.requests == 4
        await batcher.close()
        return results

    assert asyncio.run(main()) == ["done:c0", "done:c1", "done:c2", "done:c3"]
    assert calls == [["c0", "c1"], ["c2", "c3"]]  # full batches go at once, without waiting 60 s


def test_batcher_flushes_a_partial_batch_after_max_wait() -> None:
    async def run(items: list[int]) -> list[int]:
        return items

    async def main() -> None:
        batcher: CrossCameraBatcher[int, int] = CrossCameraBatcher(run, max_batch=64, max_wait_ms=5)
        assert await asyncio.wait_for(batcher.submit(7, 1), timeout=5) == 7
        await batcher.close()

    asyncio.run(main())


def test_batcher_refuses_when_full_and_errors_stay_per_request() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def run(items: list[int]) -> list[int | Exception]:
            await release.wait()
            return [ValueError("bad") if i < 0 else i for i in items]

        batcher: CrossCameraBatcher[int, int] = CrossCameraBatcher(run, max_batch=2, max_wait_ms=0, max_queue_frames=4)
        first = asyncio.ensure_future(batcher.submit(1, 2))
        await asyncio.sleep(0.01)  # dispatched, blocked in run: the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(i, 2)) for i in (-1, 3)]
        await asyncio.sleep(0.01)
        assert batcher.queued_frames == 4
        with pytest.raises(Overloaded) as info:
            await batcher.submit(4, 1)
        assert info.value.retry_after_s > 0 and info.value.queued_frames == 4
        copy = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries (Ray)
        assert isinstance(copy, Overloaded) and copy.retry_after_s == info.value.retry_after_s
        release.set()
        assert await first == 1
        with pytest.raises(ValueError, match="bad"):
            await queued[0]
        assert await queued[1] == 3
        await batcher.close()

    asyncio.run(main())


def test_batcher_in_front_of_the_runtime(package: MPackage) -> None:
    rt = StemRuntime(package)
    for camera, b in (("c0", 4), ("c1", 6)):
        rt.set_camera(camera, [{"app": "car", "branchpoint": b, "fps": 10}])
    frames = {"c0": _frames(1, 11), "c1": _frames(1, 12)}

    async def run(requests: list[InferRequest]) -> list:
        return await asyncio.to_thread(rt.infer, requests)

    async def main() -> list:
        batcher: CrossCameraBatcher[InferRequest, list] = CrossCameraBatcher(run, max_batch=2, max_wait_ms=60_000)
        out = await asyncio.gather(*(batcher.submit(InferRequest(c, f), 1) for c, f in frames.items()))
        await batcher.close()
        return out

    c0, c1 = asyncio.run(main())
    assert rt.counters["batches"] == 1  # both cameras in one tree forward
    for outcome, camera, b in ((c0, "c0", 4), (c1, "c1", 6)):
        want = _scores(package.app_model("car", b), frames[camera])
        np.testing.assert_allclose(_per_frame(outcome, "car"), want, atol=1e-5)


def test_count_app_results_carry_count_and_event_at_min_count(tmp_path: Path) -> None:
    """A count app's head is a log-rate: count = round(exp(output)); label = event_active = count >= min_count."""
    tiny_package(tmp_path, branchpoints=(6,), apps=("car",), count_apps=("cars",))
    package = load_package(tmp_path)
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "cars", "branchpoint": 6, "fps": 10}, {"app": "car", "branchpoint": 6, "fps": 10}])
    frames = _frames(6, 7)
    frames[:3] //= 4  # dark frames: few cars; bright ones: more
    frames[3:] = 200 + frames[3:] // 5
    outcome = rt.infer([InferRequest("c0", frames)])[0]
    with torch.no_grad():
        expected = np.rint(np.exp(package.app_model("cars", 6)(to_input(frames, 32))[:, 0].numpy())).astype(int)
    assert _per_frame(outcome, "cars", "count") == expected.tolist()
    assert _per_frame(outcome, "cars", "event_active") == _per_frame(outcome, "cars", "label") == (expected >= 2).tolist()
    assert all(0.0 <= s <= 1.0 for s in _per_frame(outcome, "cars"))
    assert _per_frame(outcome, "car", "count") == [None] * 6


def test_direct_frames_of_any_size_score_as_frames_resized_where_they_entered(package: MPackage) -> None:
    """The direct API resizes with the same function the ingress and the clients use, before its lock:
    a full frame and the same frame already at model size give identical scores."""
    from stemcell.imaging import resize_frames

    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10}, {"app": "person", "branchpoint": 6, "fps": 10}])
    full = _frames(2, 7, size=300)
    out_full, out_small = rt.infer([InferRequest("c0", full), InferRequest("c0", resize_frames(full, rt.input_size))])
    for app in ("car", "person"):
        assert _per_frame(out_full, app) == _per_frame(out_small, app)
    prepare, prepared = rt._input, threading.Event()

    def observed(req: InferRequest) -> torch.Tensor | ValueError:
        x = prepare(req)
        prepared.set()
        return x

    rt._input = observed  # type: ignore[method-assign]
    with rt._lock:  # a batch is running: the next one's frames are resized meanwhile, not after it
        worker = threading.Thread(target=rt.infer, args=([InferRequest("c0", full)],))
        worker.start()
        assert prepared.wait(10.0)
    worker.join()

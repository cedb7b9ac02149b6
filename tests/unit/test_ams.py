"""AmsTrainer (multi-client AMS server loop) and VersionStore: round-robin, due rule, checkpoints, durability."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.learning import AmsConfig, AmsTrainer, VersionStore, decode
from stemcell.models import build_base, make_app_model, segment_hash

SIZE = 16
CFG = AmsConfig(input_size=SIZE, iterations=3, batch_size=4, adaptive=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base():
    return build_base("tiny_cnn", num_classes=5, seed=0)


def _factory(base):
    return lambda camera, app, spec: make_app_model(base, int(spec["branchpoint"]), 1)


def _trainer(base, cameras=("a", "b", "c"), config: AmsConfig = CFG) -> AmsTrainer:
    trainer = AmsTrainer(config)
    for cam in cameras:
        trainer.add_job(cam, "car", make_app_model(base, 4, 1), 1, {"branchpoint": 4})
    return trainer


def _feed(trainer: AmsTrainer, camera: str, start: float, count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = (rng.random((count, 5)) < 0.4).astype(np.float32)
    return trainer.add_samples(camera, start + np.arange(count, dtype=np.float64), frames, labels)


def test_due_after_t_update_of_new_samples(base) -> None:
    trainer = _trainer(base, cameras=("a",))
    _feed(trainer, "a", 0.0, 9)  # 0..8 s: 8 s < T_update - one sampling interval
    assert trainer.due() == []
    _feed(trainer, "a", 9.0, 1)  # 9 s: due (one interval of slack)
    assert trainer.due() == [("a", "car")]
    assert [p.version for p in trainer.run_pending()] == [1] and trainer.due() == []
    assert _feed(trainer, "a", 5.0, 3)["accepted"] == 0  # a replayed (retried) upload changes nothing


def test_round_robin_serves_every_due_job_once_per_turn(base) -> None:
    trainer = _trainer(base)
    for cam in ("a", "b", "c"):
        _feed(trainer, cam, 0.0, 12)
    order = [trainer.run_next().camera for _ in range(3)]
    assert order == ["a", "b", "c"] and trainer.run_next() is None
    for cam in ("a", "b", "c"):
        _feed(trainer, cam, 12.0, 12)
    trainer.run_next()  # a
    _feed(trainer, "a", 24.0, 12)
    # b and c were waiting: a must not jump the queue even though it is due again
    assert [trainer.run_next().camera for _ in range(3)] == ["b", "c", "a"]


def test_stem_never_changes_and_stats_measure(base) -> None:
    trainer = _trainer(base, cameras=("a",))
    stem = [segment_hash(s) for s in base.segments[:4]]
    for k in range(3):
        _feed(trainer, "a", 12.0 * k, 12, seed=k)
        trainer.run_pending()
    stats = trainer.stats()["a/car"]
    assert stats["version"] == 3 and stats["stem_hashes"] == stem
    assert stats["wall_s"] > 0 and stats["cpu_s"] > 0 and len(stats["recent_gains"]) == 3


def test_checkpoint_round_trip_through_weights_only_bytes(base) -> None:
    trainer = _trainer(base, cameras=("a", "b"), config=AmsConfig(input_size=SIZE, iterations=3, batch_size=4))
    for cam in ("a", "b"):
        _feed(trainer, cam, 0.0, 12)
    trainer.run_next()
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    clone = AmsTrainer(trainer.config)
    clone.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True), _factory(base))
    assert clone.order == trainer.order and clone.cursor == trainer.cursor
    assert clone.sessions["a"].rates == trainer.sessions["a"].rates
    assert clone.job("a", "car").payload_since(0)[0] == trainer.job("a", "car").payload_since(0)[0]
    # identical futures: same next job, same mini-batches (RNG), same Adam moments -> same bytes
    for t in (trainer, clone):
        _feed(t, "a", 12.0, 12, seed=5)
    first, second = trainer.run_pending(), clone.run_pending()
    assert [(p.camera, p.version) for p in first] == [(p.camera, p.version) for p in second] == [("b", 1), ("a", 2)]
    assert trainer.job("a", "car").encoded[2] == clone.job("a", "car").encoded[2]


def test_version_store_restores_published_versions(base, tmp_path: Path) -> None:
    trainer = _trainer(base, cameras=("a",))
    store = VersionStore(tmp_path, keep=2)
    for k in range(3):
        _feed(trainer, "a", 12.0 * k, 12, seed=k)
        (p,) = trainer.run_pending()
        job = trainer.job("a", "car")
        store.save("a", "car", version=job.version, target=job.target, spec=job.spec,
                   last_trained_s=job.last_trained_s, weights=job.learner.trainable_state(), update=job.encoded[p.version])
    assert list(store.jobs()) == [("a", "car")]
    stored = store.load("a", "car")
    assert stored is not None and stored.version == 3 and sorted(stored.updates) == [2, 3]  # keep=2
    fresh = _trainer(base, cameras=("a",)).job("a", "car")
    fresh.restore_published(stored.version, stored.weights, stored.updates, stored.last_trained_s)
    assert fresh.payload_since(2)[0] == trainer.job("a", "car").encoded[3]
    assert decode(fresh.payload_since(None)[0]).is_full
    with pytest.raises(ValueError, match="camera_id"):
        store.load("../etc", "car")

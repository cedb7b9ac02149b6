"""Continual learning for detect apps (stemcell.learning.detect_learning, detect_labels): teacher boxes
reach the buffer normalised, a detect head retrains with sparse updates above the branchpoint and its
mAP rises on a drifted camera, the safety check (mAP@0.5 on held-out samples) keeps a worse head back,
and the zoo admits detect experts but never offers one to a presence app."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.learning import AmsConfig, AmsTrainer
from stemcell.learning.buffer import BufferItem
from stemcell.learning.detect_labels import split_labels, teacher_labels
from stemcell.learning.detect_learning import DetectJob, detect_spec, make_job
from stemcell.learning.teachers import ClassObjects, FrameMeta, FrameObjects, OracleTeacher
from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore, expert_from_model
from stemcell.models import build_base, make_app_model, make_task_model, segment_hash
from stemcell.models.detection import model_task
from stemcell.world import World, WorldConfig
from stemcell.world.datatypes import CLASSES

SIZE = 64
CFG = AmsConfig(input_size=SIZE, iterations=20, batch_size=16, lr=3e-3, gamma=0.05, adaptive=False)
DARK, LIGHT = (40, 40, 40), (230, 230, 230)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares(n: int, seed: int, background: tuple[int, ...], square: tuple[int, ...]):
    """A camera's scene: 0-2 filled squares per frame on a noisy background; the teacher's boxes are
    the squares (column 0, normalised). Swapping the colours is the camera's drift."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    frames[:] = background
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    boxes = []
    for i in range(n):
        rows = []
        for _ in range(rng.integers(0, 3)):
            w, h = rng.integers(SIZE // 5, SIZE // 3, 2)
            x, y = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            frames[i, y : y + h, x : x + w] = square
            rows.append([0, x / SIZE, y / SIZE, (x + w) / SIZE, (y + h) / SIZE])
        boxes.append(np.array(rows, np.float32).reshape(-1, 5))
    return frames, np.array([[len(b) > 0] for b in boxes], np.float32), boxes


def _items(frames, labels, boxes) -> list[BufferItem]:
    return [BufferItem(float(i), f, y, None, b) for i, (f, y, b) in enumerate(zip(frames, labels, boxes))]


def _feed(trainer: AmsTrainer, phases: int, start: int, background, square, shift: float = 0.0) -> list:
    """`phases` uploads of 20 samples, each retrained on at once; `shift` moves the teacher's boxes
    (a teacher gone wrong)."""
    out = []
    for k in range(start, start + phases):
        frames, labels, boxes = squares(20, k, background, square)
        boxes = [b + np.array([0, shift, 0, shift, 0], np.float32) for b in boxes]
        trainer.add_samples("cam", np.arange(20 * k, 20 * k + 20, dtype=float), frames, labels, boxes)
        out += trainer.run_pending()
    return out


def _trainer(config: AmsConfig = CFG, state: dict[str, torch.Tensor] | None = None) -> tuple[AmsTrainer, DetectJob]:
    """A detect job on a tiny random base, branchpoint 2; `state`: the head (and upper segments) it serves."""
    torch.manual_seed(0)
    trainer = AmsTrainer(config, job_type=make_job)
    model = make_task_model(build_base("tiny_cnn", num_classes=1, seed=0), 2, "detect", 1)
    if state is not None:
        model.load_trainable_state_dict(state)
    job = trainer.add_job("cam", "objects", model, 0, detect_spec(2, [0]))
    assert isinstance(job, DetectJob)
    return trainer, job


@pytest.fixture(scope="module")
def on_dark() -> dict[str, torch.Tensor]:
    """The trainable weights of a detect app that learnt the dark scene (light squares) from teacher
    boxes (full Adam: quick to a usable head)."""
    trainer, job = _trainer(replace(CFG, gamma=None))
    _feed(trainer, 6, 0, DARK, LIGHT)
    return job.learner.model.trainable_state_dict()


def test_teacher_boxes_reach_the_buffer_normalised() -> None:
    world = World(WorldConfig(seed=0, num_cameras=1, height=48, width=48, fps=2, duration_s=200))
    index = np.array([i for i in range(400) if world.camera(0).labels(i).boxes][:6])
    full = world.camera(0).frames(index)
    objects = OracleTeacher(world).label(full, FrameMeta(0, index))
    labels = teacher_labels(objects, CLASSES, (48, 48))  # the oracle's boxes are in the world's pixels
    small = full[:, ::2, ::2]  # what the live path buffers: frames at model size
    trainer = AmsTrainer(CFG, job_type=make_job)
    trainer.add_job("cam", "cars", make_task_model(build_base("tiny_cnn", num_classes=1), 2, "detect", 1), 1,
                    detect_spec(2, [1]))
    trainer.add_samples("cam", index / 2.0, small, *split_labels(labels))
    items = trainer.session("cam").buffer.items()
    assert len(items) == len(index)
    for item, i in zip(items, index):
        truth = sorted([CLASSES.index(b.name), b.x0 / 48, b.y0 / 48, b.x1 / 48, b.y1 / 48]
                       for b in world.camera(0).labels(int(i)).boxes)
        np.testing.assert_allclose(sorted(item.boxes.tolist()), truth, atol=1e-6)
        assert item.labels.tolist() == [float(any(t[0] == c for t in truth)) for c in range(len(CLASSES))]

    restored = AmsTrainer(CFG, job_type=make_job)  # a checkpoint keeps the boxes (weights_only-safe tensors)
    restored.load_state_dict(trainer.state_dict(), lambda c, a, spec: make_task_model(
        build_base("tiny_cnn", num_classes=1), spec["branchpoint"], "detect", 1))
    assert isinstance(restored.job("cam", "cars"), DetectJob)
    for a, b in zip(items, restored.session("cam").buffer.items()):
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_a_presence_only_teacher_gives_no_boxes_and_empty_frames_stay_usable() -> None:
    counted = FrameObjects({"person": ClassObjects(1)})  # present, not boxed
    boxed = FrameObjects({"person": ClassObjects(1, np.array([[0, 10, 40, 90]]), np.ones(1))})
    labels = teacher_labels([counted, boxed, FrameObjects()], ["person"], (100, 80))
    assert labels.boxes[0] is None and labels.boxes[2].shape == (0, 5)
    np.testing.assert_allclose(labels.boxes[1], [[0, 0, 0.1, 0.5, 0.9]])
    _, job = _trainer()
    items = [BufferItem(float(i), np.zeros((4, 4, 3), np.uint8), y, None, b)
             for i, (y, b) in enumerate(zip(labels.presence, labels.boxes))]
    assert [it.t_s for it in job.usable(items)] == [1.0, 2.0]  # "person, no boxes" cannot teach where


def test_detect_head_retrains_sparsely_and_map_rises_on_a_drifted_camera(on_dark) -> None:
    trainer, job = _trainer(CFG, on_dark)
    stem = [segment_hash(s) for s in job.learner.model.stem]
    drifted = _items(*squares(48, 99, LIGHT, DARK))  # the camera's scene changed: dark squares on light
    dark_map = job.evaluate(_items(*squares(48, 98, DARK, LIGHT)))[0]
    before = job.evaluate(drifted)[0]
    version = job.version
    published = _feed(trainer, 6, 100, LIGHT, DARK)
    after = job.evaluate(drifted)[0]
    assert dark_map > 0.2 and before < 0.1 and after > before + 0.25, (dark_map, before, after)
    assert job.version == version + len(published) and all(not p.kept_back for p in published)
    assert all(0 < p.mask_fraction <= 0.06 for p in published)  # gamma 5 %: sparse updates
    assert [segment_hash(s) for s in job.learner.model.stem] == stem  # the shared stem never moved
    assert job.update_since(version).version == job.version  # what the executor hot-swaps


def test_the_safety_check_keeps_a_worse_head_back(on_dark) -> None:
    trainer, job = _trainer(replace(CFG, safety_holdout=8, lr=2e-2, gamma=None), on_dark)
    state = job.learner.trainable_state()
    frames, labels, boxes = squares(40, 7, DARK, LIGHT)
    wrong = [b + np.array([0, 0.5, 0.5, 0.5, 0.5], np.float32) for b in boxes[:32]]  # a teacher gone wrong...
    trainer.add_samples("cam", np.arange(40, dtype=float), frames, labels, wrong + boxes[32:])  # ...then right
    [published] = trainer.run_pending()
    assert published.kept_back and published.safety is not None, published
    assert published.safety.accuracy_new < published.safety.accuracy_deployed  # mAP@0.5 on the held-out 8
    assert job.version == 0 and all(torch.equal(state[k], v) for k, v in job.learner.trainable_state().items())


def test_the_zoo_admits_detect_experts_and_never_offers_them_to_a_presence_app(tmp_path: Path, on_dark) -> None:
    base = build_base("tiny_cnn", num_classes=1, seed=0)
    zoo = ModelZoo(ZooStore(tmp_path), base, ZooConfig(k=3, gamma=1, input_size=SIZE, gating_steps=5,
                                                        gating_finetune_steps=2))
    trained = make_task_model(base, 2, "detect", 1)
    trained.load_trainable_state_dict(on_dark)
    frames, labels, _ = squares(16, 5, DARK, LIGHT)
    expert = expert_from_model(trained, expert_id="cam.people.v6", app="people", version=6, created_from="cam")
    chosen = zoo.select("cam", "people", frames, labels, last_retrained=(expert.meta.expert_id, trained))
    assert zoo.offer(chosen, expert, frames, labels).admit  # an empty zoo admits the first; gamma 1 flushes
    assert zoo.store.meta("cam.people.v6").task == "detect" and zoo.expert_ids("people") == ["cam.people.v6"]

    fresh = make_task_model(base, 2, "detect", 1)  # another camera's untrained detect app: the expert wins
    other = zoo.select("cam2", "people", frames, labels, current=("cam2.people.v0", fresh))
    assert other.from_zoo and other.chosen == "cam.people.v6" and model_task(other.model) == "detect"

    presence = make_app_model(base, 2, 1)  # a presence app of the same name: detect experts are not candidates
    alone = zoo.select("cam3", "people", frames, labels, current=("cam3.people.v0", presence))
    assert [c for c, _ in alone.accuracies] == ["cam3.people.v0"] and not alone.from_zoo

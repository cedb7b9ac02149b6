"""TeacherLabeler and RetrainWorker on local Ray: publish, stem untouched, checkpoint/resume, restart."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from actors.retrain_worker import RetrainWorker, read_checkpoint
from actors.teacher_labeler import TeacherLabeler
from stemcell.control.contracts import AppRun, UpdateMeta
from stemcell.control.errors import Moved
from stemcell.learning import FrameMeta, decode
from stemcell.learning.teachers import (
    ModelTeacherConfig,
    OracleTeacherConfig,
    PythonTeacherConfig,
    build_teacher,
    presence,
)
from stemcell.models import segment_hash
from stemcell.package import load_package
from stemcell.world import CLASSES, World, WorldConfig
from tests.helpers.builders import tiny_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

WORLD = {"seed": 5, "num_cameras": 1, "height": 32, "width": 32, "fps": 10.0, "duration_s": 60.0}
AMS = {"iterations": 4, "batch_size": 4}
APPS = [AppRun("car", 3, 10.0)]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ams-pkg")
    tiny_package(root, branchpoints=(3, 4), apps=("car",))
    return root


@pytest.fixture(scope="module")
def oracle() -> Iterator[ray.actor.ActorHandle]:
    teacher = TeacherLabeler.options(num_cpus=0.25, num_gpus=0.1).remote(
        share=0.1, teacher=OracleTeacherConfig(kind="oracle", world=WORLD, cameras={"cam-1": 0}), classes=CLASSES)
    yield teacher
    ray.kill(teacher)


def _worker(package: Path, persist: Path, **kwargs):
    return RetrainWorker.options(num_cpus=0.25, num_gpus=0.1).remote(
        str(package), persist_dir=str(persist), config=AMS, share=0.1, auto=False, **kwargs)


def _samples(start_s: float, count: int) -> tuple[list[float], np.ndarray]:
    cam = World(WorldConfig(**WORLD)).camera(0)
    stamps = [start_s + i for i in range(count)]
    return stamps, cam.frames([int(t * WORLD["fps"]) for t in stamps])


def test_oracle_teacher_labels_ground_truth(oracle) -> None:
    stamps, frames = _samples(0.0, 12)
    labels = ray.get(oracle.label.remote(frames, 0, stamps))
    truth = World(WorldConfig(**WORLD)).camera(0).presence()[[int(t * 10) for t in stamps]]
    assert labels.dtype == np.float32 and np.array_equal(labels, truth.astype(np.float32))
    assert ray.get(oracle.stats.remote()).frames == 12


def test_model_teacher_from_the_package_base(package: Path) -> None:
    """The actor's other teacher, built in-process (an extra actor costs seconds; the shell is the same)."""
    teacher = build_teacher(ModelTeacherConfig(kind="model", package_dir=package))
    _, frames = _samples(0.0, 6)
    labels = presence(teacher.label(frames, FrameMeta(0, np.zeros(6, dtype=np.int64))), CLASSES)
    assert labels.shape == (6, 5) and set(np.unique(labels)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="not both"):
        ModelTeacherConfig(kind="model", package_dir=package, base="tiny_cnn", weights=package / "w.safetensors")


def test_labeler_runs_a_plug_in_teacher_in_the_workers_class_order() -> None:
    """Any registry kind in the actor: a `python` teacher's counts become presence columns in the order
    the learners read; a class the teacher does not know is never present."""
    config = PythonTeacherConfig(kind="python", factory="tests.helpers.teachers:bright_counter", classes=["blob"])
    teacher = TeacherLabeler.options(num_cpus=0.25, num_gpus=0.1).remote(share=0.1, teacher=config,
                                                                         classes=["truck", "blob"])
    try:
        frames = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 20, 200)])  # counts 0, 0, 7
        assert ray.get(teacher.label.remote(frames)).tolist() == [[0, 0], [0, 0], [0, 1]]
        assert ray.get(teacher.ready.remote()).classes == ("blob",)
    finally:
        ray.kill(teacher)


def _adam(state: dict) -> dict:
    return state["sessions"]["cam-1"]["jobs"]["car"]["learner"]["optimizer"]["adam"]["state"]


def _same_adam(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][m], b[k][m]) for k in a for m in ("exp_avg", "exp_avg_sq"))


def test_worker_publishes_resumes_and_restarts(package: Path, oracle, tmp_path: Path) -> None:
    base = load_package(package).base
    worker = _worker(package, tmp_path / "models", checkpoint_every_s=0)  # durable trainer state after every phase
    ray.get(worker.ready.remote())
    assert ray.get(worker.set_camera.remote("cam-1", APPS)) == {"car": 0}
    stamps, frames = _samples(0.0, 12)
    advice = ray.get(worker.add_samples.remote("cam-1", stamps, frames, ray.get(oracle.label.remote(frames, 0, stamps))))
    assert advice.accepted == 12 and advice.t_update_s == 10.0 and 0.1 <= advice.sampling_fps <= 1.0
    assert advice.versions == {"car": 0}
    published = ray.get(worker.run_pending.remote())
    assert [(p.camera, p.app, p.version) for p in published] == [("cam-1", "car", 1)]

    payload, meta = ray.get(worker.update_since.remote("cam-1", "car", 0))
    update = decode(payload)
    assert meta == UpdateMeta(version=1, base_version=0, kind="sparse", branchpoint=3) and 0 < update.mask_fraction < 0.1
    assert not any(s.name.startswith("stem.") for s in update.specs)
    assert ray.get(worker.update_since.remote("cam-1", "car", 1)) is None
    stats = ray.get(worker.stats.remote())
    job = stats["jobs"]["cam-1/car"]
    assert job["stem_hashes"] == [segment_hash(s) for s in base.segments[:3]]  # the stem is still the package's
    assert job["updates"] == 1 and job["wall_s"] > 0 and job["cpu_s"] > 0 and len(job["recent_gains"]) == 1

    # make-before-break: snapshot (training paused), start the new one from it, both train alike
    blob = ray.get(worker.checkpoint.remote(pause=True))
    moved = _worker(package, tmp_path / "models-moved", resume_from=blob)
    assert ray.get(moved.ready.remote()).restored == 1
    assert _same_adam(_adam(read_checkpoint(blob)), _adam(read_checkpoint(ray.get(moved.checkpoint.remote()))))
    stamps2, frames2 = _samples(12.0, 12)
    labels2 = ray.get(oracle.label.remote(frames2, 0, stamps2))
    with pytest.raises(Moved):  # snapshotted: samples must go to the successor, not be lost here
        ray.get(worker.add_samples.remote("cam-1", stamps2, frames2, labels2))
    ray.get(worker.resume.remote())  # as after a failed move: the old worker takes samples again
    for w in (worker, moved):
        ray.get(w.add_samples.remote("cam-1", stamps2, frames2, labels2))
        assert [p.version for p in ray.get(w.run_pending.remote())] == [2]
    assert ray.get(worker.update_since.remote("cam-1", "car", 1))[0] == ray.get(moved.update_since.remote("cam-1", "car", 1))[0]

    # crash + restart: a new worker on the same folder comes back at the published version, with the
    # Adam moments and the sample buffer of its last durable checkpoint (written after version 2)
    before = read_checkpoint(ray.get(worker.checkpoint.remote()))
    ray.kill(worker)
    restarted = _worker(package, tmp_path / "models")
    assert ray.get(restarted.ready.remote()).restored == 1
    assert ray.get(restarted.stats.remote())["jobs"]["cam-1/car"]["version"] == 2
    after = read_checkpoint(ray.get(restarted.checkpoint.remote()))
    assert _same_adam(_adam(before), _adam(after))
    assert torch.equal(before["sessions"]["cam-1"]["t"], after["sessions"]["cam-1"]["t"])  # 24 buffered samples
    again, meta = ray.get(restarted.update_since.remote("cam-1", "car", 1))
    assert meta.kind == "sparse" and again == ray.get(moved.update_since.remote("cam-1", "car", 1))[0]
    assert ray.get(restarted.update_since.remote("cam-1", "car", None))[1].kind == "full"
    # a removed camera stays removed across a crash (its versions and the checkpoint no longer hold it)
    assert ray.get(restarted.remove_camera.remote("cam-1")) is True
    ray.kill(restarted)
    assert ray.get(_worker(package, tmp_path / "models").ready.remote()).restored == 0
    ray.kill(moved)


def test_worker_follows_a_moved_branchpoint_across_a_restart(package: Path, oracle, tmp_path: Path) -> None:
    worker = _worker(package, tmp_path / "models")
    ray.get(worker.set_camera.remote("cam-2", APPS))
    stamps, frames = _samples(0.0, 12)
    ray.get(worker.add_samples.remote("cam-2", stamps, frames, ray.get(oracle.label.remote(frames, 0, stamps))))
    assert [p.version for p in ray.get(worker.run_pending.remote())] == [1]

    # the Planner moved the app's cut: a new job on the package's candidate for it, version continuing
    assert ray.get(worker.set_camera.remote("cam-2", [AppRun("car", 4, 10.0)])) == {"car": 2}
    payload, meta = ray.get(worker.update_since.remote("cam-2", "car", 1))
    assert meta == UpdateMeta(version=2, base_version=None, kind="full", branchpoint=4)
    expected = {n for n, p in load_package(package).app_model("car", 4).named_parameters() if p.requires_grad}
    assert {s.name for s in decode(payload).specs} == expected
    version, weights = ray.get(worker.weights.remote("cam-2", "car"))  # what the executor is sent
    assert version == 2 and weights.keys() == load_package(package).app_model("car", 4).trainable_state_dict().keys()
    assert [p.version for p in ray.get(worker.run_pending.remote())] == [3]  # same buffer, trains at once

    ray.kill(worker)  # a crash must not bring the old cut back
    restarted = _worker(package, tmp_path / "models")
    assert ray.get(restarted.stats.remote())["jobs"]["cam-2/car"]["version"] == 3
    assert ray.get(restarted.update_since.remote("cam-2", "car", None))[1].branchpoint == 4
    assert ray.get(restarted.set_camera.remote("cam-2", [AppRun("car", 4, 10.0)])) == {"car": 3}
    ray.kill(restarted)


def test_worker_trains_its_due_jobs_by_the_planners_grants(package: Path, oracle, tmp_path: Path) -> None:
    worker = _worker(package, tmp_path / "models")
    stamps, frames = _samples(0.0, 12)
    labels = ray.get(oracle.label.remote(frames, 0, stamps))
    for camera in ("cam-a", "cam-b"):
        ray.get(worker.set_camera.remote(camera, APPS))
        ray.get(worker.add_samples.remote(camera, stamps, frames, labels))
    ray.get(worker.set_grants.remote({"cam-a/car": 1, "cam-b/car": 3}))  # round-robin would start with cam-a
    assert [p.camera for p in ray.get(worker.run_pending.remote())] == ["cam-b", "cam-a"]
    ray.kill(worker)

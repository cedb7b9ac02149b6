"""MergeWorker on local Ray: the learner's drifted per-camera models merged, shipped to the executor
(its store then holds the tied segments once), counted in the plan's `executors` section."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.learning.ams import AmsConfig, AmsTrainer
from stemcell.package import load_package
from tests.helpers.builders import random_frames, tiny_package

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration
NS = "merge-worker-test"
CAMERAS = ("c0", "c1")


def _learner_checkpoint(package_dir: Path, t0: float, version: int) -> tuple[bytes, dict[str, dict]]:
    """A learner whose two cameras' car models drifted apart (as AMS updates make them), with buffers."""
    from actors.retrain_worker import checkpoint_bytes

    pkg = load_package(package_dir)
    base = pkg.manifest.base
    trainer = AmsTrainer(AmsConfig(input_size=base.input_size, mean=base.normalization.mean,
                                   std=base.normalization.std))
    car = pkg.manifest.data.classes.index("car")
    states = {}
    for k, cam in enumerate(CAMERAS):
        job = trainer.add_job(cam, "car", pkg.app_model("car", 3), car, {"branchpoint": 3})
        gen = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for p in job.learner.model.upper.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        job.learner.version = version
        frames = random_frames(n=30, seed=10 + k)
        trainer.add_samples(cam, t0 + np.arange(30, dtype=np.float64), frames.frames, frames.presence.astype(np.float32))
        states[cam] = job.learner.model.trainable_state_dict()
    return checkpoint_bytes(trainer.state_dict()), states


def test_merge_ships_tied_weights_and_counts_remerges(ray_session: None, tmp_path: Path) -> None:
    from actors.merge_worker import SECTION, MergeWorker
    from actors.state_store import get_or_create_state_store
    from actors.stem_executor import StemExecutor

    package_dir = tmp_path / "pkg"
    tiny_package(package_dir, branchpoints=(3,), apps=("car",))
    store = get_or_create_state_store(str(tmp_path / "state.db"), namespace=NS)
    executor = StemExecutor.options(name="ex-merge", namespace=NS, num_cpus=0).remote(str(package_dir), max_batch=4)
    worker = MergeWorker.options(num_cpus=0).remote(
        str(package_dir), state_path=str(tmp_path / "state.db"), namespace=NS,
        config={"tolerance_points": 100.0, "max_epochs": 1, "budget_s": 60.0}, min_samples=12)
    try:
        ray.get(executor.ready.remote(), timeout=60)
        for cam in CAMERAS:
            ray.get(executor.add_camera.remote(cam, [{"app": "car", "branchpoint": 3, "fps": 10}]))
        blob, states = _learner_checkpoint(package_dir, 100.0, version=1)
        for cam in CAMERAS:  # what the learning service ships: the drifted, unmerged models
            ray.get(executor.set_app_weights.remote("car", cam, states[cam], 1))
        unmerged = ray.get(executor.memory_report.remote()).bytes_merged

        summary = ray.get(worker.merge.remote("ex-merge", blob), timeout=120)
        assert summary.models == 2 and summary.groups >= 1 and summary.view.merged_bytes < summary.view.unmerged_bytes
        merged = ray.get(executor.memory_report.remote()).bytes_merged
        assert unmerged - merged == summary.view.unmerged_bytes - summary.view.merged_bytes > 0  # one copy less there
        results = ray.get(executor.infer.remote("c0", random_frames(n=2, seed=99).frames))
        assert results[0].model_versions == {"car": 1}  # merged weights of the learner's version, not a new one

        ray.get(worker.merge.remote("ex-merge", blob), timeout=120)
        checked = ray.get(worker.check.remote("ex-merge", _learner_checkpoint(package_dir, 200.0, 1)[0]), timeout=60)
        assert checked.checked == 2 and checked.counts.checks == 1
        deadline = time.monotonic() + 10
        while (section := ray.get(store.plan_section.remote(SECTION))) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        view = section["ex-merge"]["merge"]
        assert view["remerges"] == 1 and view["undone"] == checked.undone
        assert view["merged_bytes"] < view["unmerged_bytes"]
        assert ray.get(worker.view.remote())["ex-merge"].remerges == 1

        # the schedule: nothing to do on a CPU executor (no cap) while the learner has not moved on ...
        assert ray.get(worker.tick.remote({"ex-merge": 1.0}, blob), timeout=60) == {"ex-merge": None}
        # ... and a learner version 2 of the merged models is retrained with the shared units frozen,
        # checked, and served as the merged weights of version 2: the executor keeps one copy of them
        moved, _ = _learner_checkpoint(package_dir, 300.0, version=2)
        assert ray.get(worker.tick.remote({"ex-merge": 1.0}, moved), timeout=300) == {"ex-merge": "update"}
        results = ray.get(executor.infer.remote("c0", random_frames(n=2, seed=98).frames))
        assert results[0].model_versions == {"car": 2}
        updated = ray.get(worker.view.remote())["ex-merge"]
        # what the executor stores is the updated merge (its own layers retrained, the shared ones once)
        assert ray.get(executor.memory_report.remote()).bytes_merged == updated.merged_bytes < unmerged
        assert updated.updates == 2 and updated.merged_bytes < updated.unmerged_bytes
        assert ray.get(worker.tick.remote({"ex-merge": 1.0}, moved), timeout=60) == {"ex-merge": None}
    finally:
        for actor in (worker, executor, store):
            ray.kill(actor)


def test_restarted_worker_runs_its_schedule_again(ray_session: None, tmp_path: Path) -> None:
    """The schedule comes with the constructor, so a worker Ray restarts (`max_restarts`) keeps merging."""
    from actors.merge_worker import MergeWorker

    package_dir = tmp_path / "pkg"
    tiny_package(package_dir, branchpoints=(3,), apps=("car",))
    worker = MergeWorker.options(num_cpus=0, max_restarts=1).remote(
        str(package_dir), state_path=str(tmp_path / "state.db"), namespace=NS,
        schedule={"poll_s": 3600.0}, run_over=({"no-such-executor": 1.0}, "no-such-learner"))
    try:
        assert _eventually(lambda: ray.get(worker.scheduled.remote(), timeout=60))
        pid = ray.get(worker.__ray_call__.remote(lambda _self: os.getpid()))
        ray.kill(worker, no_restart=False)
        assert _eventually(lambda: ray.get(worker.__ray_call__.remote(lambda _self: os.getpid())) != pid)
        assert _eventually(lambda: ray.get(worker.scheduled.remote(), timeout=60))
    finally:
        ray.kill(worker)


def _eventually(check, timeout_s: float = 60.0) -> bool:
    """`check()` true within `timeout_s` (a restarting actor's calls may fail for a moment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except ray.exceptions.RayActorError:
            pass
        time.sleep(0.2)
    return False

"""A merge over a learner's jobs: data from its buffers, the frozen stem left alone, merged weights served."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.learning.ams import AmsConfig, AmsTrainer
from stemcell.package import MPackage, load_package
from stemcell.sharing import StemRuntime
from stemcell.sharing.joint_merge import JointMerger, MergeConfig
from stemcell.sharing.merge_jobs import ExecutorMergeState, MergeSchedule, learner_workload, merge_due, store_bytes
from tests.helpers.builders import random_frames, tiny_package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root: Path = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(3,), apps=("car",))
    return load_package(root)


def _trainer(package: MPackage, samples: dict[str, int]) -> AmsTrainer:
    """Jobs for `car` on each camera, their upper segments drifted apart, `samples[camera]` in the buffer."""
    trainer = AmsTrainer(AmsConfig(input_size=32))
    car = package.manifest.data.classes.index("car")
    for k, (cam, n) in enumerate(samples.items()):
        job = trainer.add_job(cam, "car", package.app_model("car", 3), car, {"branchpoint": 3})
        with torch.no_grad():
            for p in job.learner.model.upper.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
        frames = random_frames(n=max(n, 1), seed=k)
        trainer.add_samples(cam, 10.0 + np.arange(n, dtype=np.float64), frames.frames[:n],
                            frames.presence[:n].astype(np.float32))
    return trainer


def test_workload_holds_out_every_third_sample_and_skips_thin_buffers(package: MPackage) -> None:
    trainer = _trainer(package, {"c0": 30, "c1": 30, "c2": 5})
    work = learner_workload(trainer, holdout_every=3, min_samples=12)
    assert work.keys == [("c0", "car"), ("c1", "car")]  # c2: 5 samples < 12
    assert [len(d.val_x) for d in work.data] == [10, 10] and [len(d.train_x) for d in work.data] == [20, 20]
    assert work.data[0].train_x.shape[1:] == (3, 32, 32) and set(work.data[0].val_y.unique().tolist()) <= {0.0, 1.0}
    assert work.newest_s == {"c0": 39.0, "c1": 39.0}
    fresh = learner_workload(trainer, holdout_every=1, min_samples=1, since_s={"c0": 35.0, "c1": 39.0})
    assert fresh.keys == [("c0", "car"), ("c2", "car")] and len(fresh.data[0].val_x) == 4


def test_the_learners_frozen_stem_is_not_a_candidate_and_stays_unchanged(package: MPackage) -> None:
    work = learner_workload(_trainer(package, {"c0": 30, "c1": 30}))
    stem = {k: v.clone() for k, v in work.models[0].stem.state_dict().items()}
    result = JointMerger(work.models, work.data, MergeConfig(tolerance_points=100.0, max_epochs=1)).run()
    assert result.groups and all(path.startswith("upper.") for g in result.groups for _, path in g.members)
    for k, v in result.models[1].stem.state_dict().items():
        torch.testing.assert_close(v, stem[k], rtol=0, atol=0)
    assert store_bytes(result.models) < store_bytes(work.models) and store_bytes([]) == 0


def test_merged_weights_replace_the_same_version_and_a_later_version_replaces_them(package: MPackage) -> None:
    rt = StemRuntime(package)
    rt.set_camera("c0", [{"app": "car", "branchpoint": 3, "fps": 10}])
    state = {k: v + 0.01 for k, v in package.app_model("car", 3).trainable_state_dict().items()}
    assert rt.set_app_weights("car", "c0", state, 2) == 1
    assert rt.set_app_weights("car", "c0", state, 2) == 0  # a retried learner delivery: no-op
    assert rt.set_app_weights("car", "c0", state, 2, merged=True) == 1  # the merge of version 2
    assert rt.set_app_weights("car", "c0", state, 1, merged=True) == 0  # a merge of an older version: stale
    assert rt.set_app_weights("car", "c0", state, 3) == 1


def test_merge_schedule_updates_moved_merged_models_and_merges_tight_executors_on_a_timer() -> None:
    schedule = MergeSchedule(every_s=100.0, tight_fraction=0.8)
    roomy = ExecutorMergeState(weight_bytes=1000, activation_bytes=200, cap_bytes=3000, swapping=False,
                               last_merge_s=None)
    assert merge_due(roomy, 0.0, schedule) is None  # (1000 + 200) x 1.25 = 1500 < 0.8 x 3000: room
    tight = replace(roomy, cap_bytes=1800)  # 1500 >= 1440
    assert merge_due(tight, 0.0, schedule) == "merge"
    assert merge_due(replace(tight, last_merge_s=0.0), 50.0, schedule) is None  # merged 50 s ago
    assert merge_due(replace(tight, last_merge_s=0.0), 100.0, schedule) == "merge"  # re-merge on the timer
    assert merge_due(replace(roomy, swapping=True), 0.0, schedule) == "merge"  # a swapping executor is tight
    assert merge_due(replace(roomy, cap_bytes=None), 0.0, schedule) is None  # the CPU: no cap to relieve
    key = ("c0", "car")
    merged = replace(roomy, last_merge_s=0.0, merged_versions={key: 3}, learner_versions={key: 3, ("c1", "car"): 9})
    assert merge_due(merged, 1.0, schedule) is None  # unmerged models may move on freely
    assert merge_due(replace(merged, learner_versions={key: 4}), 1.0, schedule) == "update"
    assert merge_due(replace(tight, last_merge_s=0.0, merged_versions={key: 3}, learner_versions={key: 4}), 1.0,
                     schedule) == "update"  # an update comes before a timed re-merge

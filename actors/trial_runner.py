"""M-Trainer trials as Ray tasks with fractional GPU shares, so a GPU cluster trains several at once."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import ray

from stemcell.models import SegmentedNet, build_base
from stemcell.training import CandidateResult, CandidateSpec, LabelledFrames, finetune_candidate
from stemcell.training.mtrainer import log_trial

log = logging.getLogger(__name__)


@ray.remote(max_retries=2)
def _trial(base_name: str, num_classes: int, base_state: dict, spec: CandidateSpec,
           train: LabelledFrames, val: LabelledFrames) -> CandidateResult:
    base = build_base(base_name, num_classes=num_classes)
    base.load_state_dict(base_state)
    return finetune_candidate(base.eval(), spec, train, val)


class RayTrialRunner:
    """Callable `TrialRunner`: fans trials out as tasks holding `gpus_per_trial` of a (logical) GPU."""

    def __init__(self, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.25) -> None:
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial

    def __call__(self, base: SegmentedNet, specs: Sequence[CandidateSpec], train: LabelledFrames,
                 val: LabelledFrames) -> list[CandidateResult]:
        gpus = self.gpus_per_trial if ray.cluster_resources().get("GPU", 0) > 0 else 0
        state_ref, train_ref, val_ref = ray.put(base.state_dict()), ray.put(train), ray.put(val)
        task = _trial.options(num_cpus=self.cpus_per_trial, num_gpus=gpus)
        pending = {task.remote(base.name, base.num_classes, state_ref, s, train_ref, val_ref): s for s in specs}
        results: list[CandidateResult] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            results.append(ray.get(done[0]))
            log_trial(len(results), len(specs), results[-1])
        return results

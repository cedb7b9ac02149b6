"""Continual learning in the serving path, without Ray: what the RetrainWorker does with live samples.

Per batch of teacher-labelled live samples of a camera (`measure`, before they enter the buffer, so
nothing is measured on what it trained on):
1. the deployed model of each learning app, and the package's other candidates of the app (they
   share the stem), are scored against the teacher (`stemcell.learning.live_stats`);
2. drift (agreement falling by more than `drift_threshold`), and a camera app's first batch (a new
   camera starts on the expert that fits its scene, RECL's model reuse), trigger a zoo switch (`switch`):
   the app's gating network proposes its top-K experts of the shared zoo, the safety check weighs
   them with the deployed model on the camera's newest teacher-labelled samples, and an expert that
   is right on more of them (by at least `switch_margin`) is deployed at once, as a new version (edges
   catch up in full), before retraining catches up (`stemcell.learning.zoo.switching`: a switch gives
   up the camera's own lineage, so a tie, even one the loss would break, does not switch). The replaced
   model stays a contender for `own_batches` batches: if it beats the serving expert on one of them
   (the safety rule), the switch is undone at once (`undone`). Every decision is logged (`decisions`);
3. every retrained model the safety check let through is offered to the zoo (`offer`): admitted by
   RECL's rule (it beat every other candidate by alpha), the zoo pruned as RECL specifies.

The zoo lives on disk (`stemcell.learning.zoo.ZooStore`: experts and gating networks survive a
restart); the counters, the experts cameras run and the estimates ride in the worker's checkpoint.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stemcell.learning.ams import AmsConfig, AmsTrainer, AppJob, Published
from stemcell.learning.live_stats import Estimate, LiveStats
from stemcell.learning.published import model_logits
from stemcell.learning.safety import best_model
from stemcell.learning.zoo import Expert, ModelZoo, expert_from_model
from stemcell.learning.zoo.switching import OwnModel, switch_due
from stemcell.models import AppModel

log = logging.getLogger(__name__)

FRESH_SAMPLES = 32  # newest buffered samples the zoo's safety check and admission weigh
PRUNE_EVERY = 20  # offers between two pruning passes
DECISIONS_KEPT = 256  # zoo decisions (switch, stay, undone) kept, for the benchmarks and the view
DECISIONS_SHOWN = 20  # the newest of them in `GET /admin/zoo`


class LiveLearning:
    def __init__(self, trainer: AmsTrainer, candidate: Callable[[str, int], AppModel],
                 branchpoints: Callable[[str], Sequence[int]], *, zoo: ModelZoo | None = None,
                 drift_threshold: float = 0.1, window: int = 1000, decisions_kept: int = DECISIONS_KEPT,
                 switch_margin: float = 0.0, own_batches: int = 8) -> None:
        """`candidate(app, bp)`: the package's model of the app at `bp` (cached by the caller);
        `branchpoints(app)`: the app's candidates; `switch_margin`, `own_batches`: see
        `stemcell.learning.zoo.switching`."""
        self.trainer, self.candidate, self.branchpoints = trainer, candidate, branchpoints
        self.zoo, self.drift_threshold = zoo, drift_threshold
        self.switch_margin, self.own_batches = switch_margin, own_batches
        self.stats = LiveStats(window)
        self.counts = {"admissions": 0, "prunings": 0, "switches": 0, "undone": 0, "offers": 0}
        self.experts: dict[tuple[str, str], str] = {}  # (camera, app) -> zoo expert a switch deployed (until retrained)
        self._replaced: dict[tuple[str, str], OwnModel[AppModel]] = {}  # model a switch replaced, while a contender
        self.updated_at: dict[tuple[str, str], float] = {}  # wall time of the last deployed version
        # what each drift query decided, on the camera's sample clock: why a camera did (not) switch
        self.decisions: deque[dict[str, Any]] = deque(maxlen=decisions_kept)

    @property
    def config(self) -> AmsConfig:
        return self.trainer.config

    def _jobs(self, camera: str, apps: Sequence[str]) -> list[AppJob]:
        return [self.trainer.job(camera, a) for a in apps if self.trainer.has_job(camera, a)]

    def measure(self, camera: str, apps: Sequence[str], t_s: Sequence[float], frames: np.ndarray,
                labels: np.ndarray) -> list[str]:
        """Score the deployed model and the other candidates of each app on a new batch; the apps that drifted
        (or that it is the first batch of: the zoo may have an expert for a new camera's scene)."""
        drifted = []
        for job in self._jobs(camera, apps):
            teacher = labels[:, job.target] > 0.5
            self._probation(job, float(t_s[-1]), frames, teacher)
            others = {bp: model_logits(self.candidate(job.app, bp), frames, self.config) > 0
                      for bp in self.branchpoints(job.app) if bp != job.branchpoint}
            first = (camera, job.app) not in self.stats.agreement
            self.stats.observe(camera, job.app, int(job.branchpoint or 0), job.version, float(t_s[-1]), teacher,
                               job.predict(frames) > 0, others, stamps=np.asarray(t_s, float))
            if self.zoo is not None and (first or self.stats.agreement[(camera, job.app)].drifted(self.drift_threshold)):
                drifted.append(job.app)
        return drifted

    def _probation(self, job: AppJob, ts: float, frames: np.ndarray, teacher: np.ndarray) -> None:
        """The batches after a switch: undo it if the model it replaced beats the expert on one of them."""
        own = self._replaced.pop((job.camera, job.app), None)
        if own is None:
            return
        scores = {name: _score(logits, teacher) for name, logits in
                  (("expert", job.predict(frames)), ("replaced", model_logits(own.model, frames, self.config)))}
        if best_model({k: v[0] for k, v in scores.items()}, {k: v[1] for k, v in scores.items()}, "expert") == "expert":
            if own.spend():
                self._replaced[(job.camera, job.app)] = own
            return
        job.adopt(own.model.trainable_state_dict())
        self._decided(job.camera, job.app, ts, "undone", self.experts.pop((job.camera, job.app), None),
                      scores["expert"][0], scores["replaced"][0])
        self.counts["undone"] += 1
        self.stats.agreement[(job.camera, job.app)].switched()
        log.info("camera %s app %s: zoo switch undone (expert %.2f, replaced model %.2f on the next batch)",
                 job.camera, job.app, scores["expert"][0], scores["replaced"][0])

    def _fresh(self, job: AppJob) -> tuple[np.ndarray, np.ndarray]:
        items = self.trainer.session(job.camera).buffer.items()[-FRESH_SAMPLES:]
        return np.stack([it.frame for it in items]), np.stack([it.labels[[job.target]] for it in items])

    def _expert_of(self, job: AppJob, created_at: float = 0.0) -> Expert:
        return expert_from_model(job.learner.model, expert_id=f"{job.camera}.{job.app}.v{job.version}", app=job.app,
                                 version=job.version, created_from=job.camera, created_at=created_at)

    def switch(self, camera: str, app: str, frames: np.ndarray, labels: np.ndarray) -> bool:
        """Drift seen on this batch: deploy the zoo expert the safety check prefers to the deployed model
        on it (the samples since the scene changed; older ones would vote for the old scene), if any."""
        assert self.zoo is not None
        job = self.trainer.job(camera, app)
        current = self._expert_of(job)
        selection = self.zoo.select(camera, app, frames, labels[:, [job.target]],
                                    current=(current.meta.expert_id, job.learner.model))
        accuracies = dict(selection.accuracies)
        serving = accuracies.pop(current.meta.expert_id)
        best = max(accuracies, key=accuracies.__getitem__, default=None)
        agreement = self.stats.agreement[(camera, app)]
        ts = agreement.history[-1][0] if agreement.history else None
        expert = self.zoo.store.get(selection.chosen) if selection.from_zoo else None
        if (expert is None or selection.chosen == current.meta.expert_id or expert.meta.branchpoint != job.branchpoint
                or not switch_due(selection.accuracy, serving, self.switch_margin)):
            # the same model serves: its drift stays measured from the level it had reached, so a camera
            # still worse than that asks the zoo again on its next batch (resetting the level here would
            # make a model that fell stay unnoticed until retraining lifts it)
            self._decided(camera, app, ts, "stay", best, accuracies.get(best) if best else None, serving)
            return False
        agreement.switched()  # another model serves: measure afresh
        self._decided(camera, app, ts, "switch", selection.chosen, selection.accuracy, serving)
        if (camera, app) not in self._replaced:  # switching again: the camera's own model is the one to keep
            self._replaced[(camera, app)] = OwnModel(copy.deepcopy(job.learner.model), self.own_batches)
        job.adopt(expert.state)
        self.experts[(camera, app)] = selection.chosen
        self.counts["switches"] += 1
        self.updated_at[(camera, app)] = time.time()
        log.info("camera %s app %s drifted: zoo expert %s deployed as version %d (%.2f on fresh samples)",
                 camera, app, selection.chosen, job.version, selection.accuracy)
        return True

    def _decided(self, camera: str, app: str, ts: float | None, kind: str, expert: str | None,
                 expert_accuracy: float | None, serving_accuracy: float) -> None:
        """Log a zoo decision at the camera's sample time `ts`: `switch` (an expert deployed), `stay`
        (none beat the serving model; `expert` is the best of them), `undone` (probation lost)."""
        self.decisions.append({"camera": camera, "app": app, "ts": ts, "kind": kind,
                               "expert": expert, "expert_accuracy": expert_accuracy,
                               "serving_accuracy": serving_accuracy})

    def offer(self, published: Published) -> None:
        """A retrained model was deployed: offer it to the zoo (RECL admission), prune now and then."""
        self.updated_at[(published.camera, published.app)] = time.time()
        self.experts.pop((published.camera, published.app), None)  # it runs its own retrained model now
        if self.zoo is None:
            return
        job = self.trainer.job(published.camera, published.app)
        frames, labels = self._fresh(job)
        expert = self._expert_of(job, time.time())
        before = len(self.zoo.store)
        selection = self.zoo.select(job.camera, job.app, frames, labels,
                                    last_retrained=(expert.meta.expert_id, job.learner.model))
        self.zoo.offer(selection, expert, frames, labels)
        self.counts["offers"] += 1
        self.counts["admissions"] += max(0, len(self.zoo.store) - before)
        if self.counts["offers"] % PRUNE_EVERY == 0:
            self.counts["prunings"] += len(self.zoo.prune())

    # ------------------------------------------------------------------ views
    def zoo_view(self) -> dict[str, Any]:
        """`GET /admin/zoo` (the contract in the common brief)."""
        experts = []
        if self.zoo is not None:
            recent = list(self.zoo.history.recent)
            for meta in sorted(self.zoo.store.metas(), key=lambda m: m.expert_id):
                state = self.zoo.store.get(meta.expert_id).state
                experts.append({
                    "id": meta.expert_id, "app": meta.app, "branchpoint": meta.branchpoint, "base": meta.base_hash,
                    "size_bytes": int(sum(t.numel() * t.element_size() for t in state.values())),
                    "admitted_at": meta.created_at, "uses": recent.count(meta.expert_id),
                    "cameras": sorted({c for (c, _), e in self.experts.items() if e == meta.expert_id})})
        cameras = {c: e for (c, _), e in sorted(self.experts.items(), reverse=True)}  # per camera, its alphabetically first app's
        return {"enabled": self.zoo is not None, "experts": experts, "admissions": self.counts["admissions"],
                "prunings": self.counts["prunings"], "switches": self.counts["switches"],
                "undone": self.counts["undone"], "cameras": cameras,
                "decisions": list(self.decisions)[-DECISIONS_SHOWN:]}

    def learning_status(self, camera: str) -> dict[str, Any] | None:
        """The `learning` block of `GET /cameras/{id}/status`; None: not learning. The contract's keys
        describe the camera's first learning app; `apps` has the same block for every learning app."""
        if camera not in self.trainer.sessions or not self.trainer.sessions[camera].jobs:
            return None
        apps = {app: self._app_status(camera, app, job) for app, job in self.trainer.sessions[camera].jobs.items()}
        first = next(iter(apps))
        return {"enabled": True, "app": first, **apps[first], "apps": apps}

    def _app_status(self, camera: str, app: str, job: AppJob) -> dict[str, Any]:
        agreement = self.stats.agreement.get((camera, app))
        return {"samples_buffered": len(self.trainer.sessions[camera].buffer),
                "last_update_at": self.updated_at.get((camera, app)), "version": job.version,
                "agreement_now": agreement.now if agreement else None,
                "agreement_v0": agreement.v0 if agreement else None,
                "expert": self.experts.get((camera, app)), "kept_back": job.stats.kept_back,
                "history": [{"ts": t, "agreement": a} for t, a in (agreement.history if agreement else [])]}

    def estimates(self) -> dict[str, dict[str, dict[int, Estimate]]]:
        """camera -> app -> branchpoint -> running estimate."""
        out: dict[str, dict[str, dict[int, Estimate]]] = {}
        for camera, app, _ in self.stats.confusion:
            out.setdefault(camera, {})[app] = self.stats.estimates(camera, app)
        return out

    def forget(self, camera: str) -> None:
        self.stats.forget(camera)
        self.experts = {k: v for k, v in self.experts.items() if k[0] != camera}
        self._replaced = {k: v for k, v in self._replaced.items() if k[0] != camera}
        self.updated_at = {k: v for k, v in self.updated_at.items() if k[0] != camera}

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "counts": dict(self.counts), "experts": [[c, a, e] for (c, a), e in self.experts.items()],
                "updated_at": [[c, a, t] for (c, a), t in self.updated_at.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state.get("stats", {}))
        self.counts.update({k: int(v) for k, v in state.get("counts", {}).items()})
        experts = state.get("experts", [])  # a checkpoint from before experts were per app: a dict, dropped
        self.experts.update({(c, a): e for c, a, e in experts} if isinstance(experts, list) else {})
        self.updated_at.update({(c, a): float(t) for c, a, t in state.get("updated_at", [])})


def _score(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, float]:
    """(accuracy, BCE loss) of one-output logits against the teacher's presence: the safety rule's inputs."""
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(teacher.astype(np.float32)))
    return float(((logits > 0) == teacher).mean()), float(loss)

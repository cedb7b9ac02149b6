"""ModelZoo actor: a thin Ray shell over `stemcell.learning.zoo.ModelZoo` (RECL's shared expert zoo).

Models cross the actor boundary as `Expert`s (metadata + the trainable state above the app's
branchpoint), never as modules: the stem is the M-Package's shared base, which the zoo loads once
from the package, so an expert is a few hundred KB and always plugs onto the same frozen stem.

Durable: experts and each app's gating network live in the zoo directory (safetensors + a
hash-checked manifest, written atomically), so an actor restarted by Ray (`max_restarts=-1`)
re-opens the directory with every admitted expert and gating network, and the safety checker's
selection history (the experts' uses, what pruning judges). What is lost on a restart is soft
state: the admission queue (models waiting for a flush; their cameras offer again after their next
retraining) and the last selection per camera (`offer` then asks for a new `select`).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from ray.actor import ActorHandle

from stemcell.learning.zoo import Expert, ModelZoo, Selection, ZooConfig, ZooStore, load_expert
from stemcell.learning.zoo.store import ExpertMeta
from stemcell.models import AppModel, make_app_model
from stemcell.package import load_package

log = logging.getLogger(__name__)

ACTOR_NAME = "stemcell-model-zoo"


@dataclass(frozen=True)
class ZooChoice:
    """`select`'s answer: the winner of the safety check, and what it weighed."""

    chosen: str  # id of the model to deploy
    accuracy: float  # its accuracy on the fresh teacher-labelled frames
    accuracies: Mapping[str, float]  # every shortlisted candidate's accuracy
    from_zoo: bool  # a stored zoo expert won (model reuse)
    expert: Expert  # the winner, ready to deploy (`StemExecutor.set_app_weights`)


@dataclass(frozen=True)
class ZooOffer:
    """`offer`'s answer: the admission decision and the zoo's size after it."""

    admit: bool  # promising: queued for the zoo (admitted at the next flush)
    margin: float  # its accuracy minus the best other candidate's (inf without a rival)
    queued: int  # models waiting for a flush
    experts: int  # experts stored


@dataclass(frozen=True)
class ZooStats:
    experts: int  # experts stored
    queued: int  # models waiting for a flush
    in_use: Mapping[str, str]  # camera -> id of the model it runs (its last selection)
    apps: tuple[str, ...]  # apps with at least one expert


class ModelZooService:
    """Plain class (wrapped by `ModelZooActor`) so the shell's conversions are testable without Ray."""

    def __init__(self, root: str, package_dir: str, config: ZooConfig | None = None) -> None:
        package = load_package(package_dir)
        config = config or ZooConfig()
        base = package.manifest.base  # experts see frames as the package's models do
        config = dataclasses.replace(config, input_size=base.input_size, mean=base.normalization.mean,
                                     std=base.normalization.std)
        self.base = package.base
        self.zoo = ModelZoo(ZooStore(root), self.base, config)
        self._last: dict[tuple[str, str], Selection] = {}
        log.info("model zoo at %s: %d experts", root, len(self.zoo.store))

    def _model(self, expert: Expert) -> AppModel:
        outputs = expert.state["head.fc.weight"].shape[0]
        return load_expert(make_app_model(self.base, expert.meta.branchpoint, outputs), expert)

    def select(self, camera: str, app: str, frames: np.ndarray, labels: np.ndarray, *,
               current: Expert | None = None, last_retrained: Expert | None = None) -> ZooChoice:
        """Gating top-K + current + last retrained, safety-checked on fresh teacher-labelled frames.

        Returns the winner as an `Expert` the caller deploys (e.g. `StemExecutor.set_app_weights`).
        """
        given = {e.meta.expert_id: e for e in (current, last_retrained) if e is not None}
        selection = self.zoo.select(
            camera, app, frames, labels,
            current=(current.meta.expert_id, self._model(current)) if current else None,
            last_retrained=(last_retrained.meta.expert_id, self._model(last_retrained)) if last_retrained else None,
        )
        self._last[(camera, app)] = selection
        chosen = given.get(selection.chosen) or self.zoo.store.get(selection.chosen)
        return ZooChoice(selection.chosen, selection.accuracy, dict(selection.accuracies), selection.from_zoo, chosen)

    def offer(self, camera: str, app: str, expert: Expert, train_frames: np.ndarray,
              train_labels: np.ndarray) -> ZooOffer:
        """Admit `expert` (the `last_retrained` of this camera's last `select`) if it beat the rest by alpha."""
        selection = self._last.get((camera, app))
        if selection is None:
            raise KeyError(f"no selection for {camera}/{app} since this zoo started; call select first")
        decision = self.zoo.offer(selection, expert, train_frames, train_labels)
        return ZooOffer(decision.admit, decision.margin, len(self.zoo.queue), len(self.zoo.store))

    def flush(self) -> list[str]:
        return self.zoo.flush()

    def prune(self) -> list[str]:
        return self.zoo.prune()

    def experts(self, app: str | None = None) -> list[ExpertMeta]:
        return list(self.zoo.store.metas(app))

    def stats(self) -> ZooStats:
        return ZooStats(len(self.zoo.store), len(self.zoo.queue), dict(self.zoo.in_use),
                        tuple(sorted({m.app for m in self.zoo.store.metas()})))


ModelZooActor = ray.remote(num_cpus=0.5, max_restarts=-1, max_task_retries=0)(ModelZooService)


def get_or_create_model_zoo(root: str | Path, package_dir: str | Path, config: ZooConfig | None = None, *,
                            namespace: str = "stemcell") -> ActorHandle:
    """The cluster's single named zoo. `root` must be on storage the node it restarts on can read."""
    return ModelZooActor.options(name=ACTOR_NAME, namespace=namespace, get_if_exists=True, lifetime="detached",
                                 ).remote(str(root), str(package_dir), config)

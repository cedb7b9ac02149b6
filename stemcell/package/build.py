"""Assemble an M-Package from a trained base, its latency profile and fine-tuned candidates."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stemcell.config import IMAGENET_MEAN, IMAGENET_STD
from stemcell.models import SegmentedNet, segment_hash
from stemcell.package.manifest import (
    SCHEMA_VERSION,
    AppEntry,
    BaseEntry,
    CandidateEntry,
    DataEntry,
    LatencyEntry,
    Manifest,
    NormalizationEntry,
)
from stemcell.package.store import write_package, write_weights
from stemcell.training import CandidateResult, LatencyProfile
from stemcell.world import CLASSES, extract_events

IMAGENET = NormalizationEntry(mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class TrainingInfo:
    """What the candidates were trained on and how frames were fed (recorded in the manifest)."""

    input_size: int  # square model input resolution
    fps: float  # frame rate of the training footage (event lengths are in these frames)
    data: DataEntry  # data source provenance, classes, label counts
    world: dict[str, float | int] | None = None  # the synthetic world's settings (kind: synthetic)
    normalization: NormalizationEntry = field(default=IMAGENET)


def synthetic_data_entry() -> DataEntry:
    """Provenance of training on the synthetic world (no files; its classes)."""
    return DataEntry(kind="synthetic", files=[], classes=list(CLASSES), label_counts={})


def app_entry(
    name: str, classes: Sequence[str], events: np.ndarray | Sequence[np.ndarray], *, task: str = "presence",
    min_count: int = 1, spacing: float = 1.0,
) -> AppEntry:
    """Base rate and mean event length of one app over its event timeline(s) (one bool row per video).

    `spacing` is the gap in stream frames between labelled frames (labels every N-th frame make each
    run N times longer in stream frames).
    """
    rows = [np.asarray(r, bool) for r in (np.atleast_2d(events) if isinstance(events, np.ndarray) else events)]
    runs = [spacing * (e.stop - e.start) for row in rows for e in extract_events(row)]
    return AppEntry(
        name=name,
        classes=list(classes),
        task=task,  # type: ignore[arg-type]
        min_count=min_count,
        positive_fraction=float(np.mean(np.concatenate(rows))) if rows else 0.0,
        mean_event_frames=float(np.mean(runs)) if runs else 1.0,
    )


def latency_entry(profile: LatencyProfile) -> LatencyEntry:
    return LatencyEntry(
        device=profile.device,
        batch_sizes=list(profile.batch_sizes),
        segment_s={str(b): list(t) for b, t in profile.segment_s.items()},
        head_s={str(b): t for b, t in profile.head_s.items()},
        full_model_s={str(b): t for b, t in profile.full_model_s.items()},
        detect_head_s=None if profile.detect_head_s is None else {str(b): t for b, t in profile.detect_head_s.items()},
    )


def build_package(
    root: str | Path,
    base: SegmentedNet,
    info: TrainingInfo,
    profile: LatencyProfile,
    apps: Sequence[AppEntry],
    results: Sequence[CandidateResult],
) -> Manifest:
    """Write base weights once, each candidate's trainable part, then the manifest (last)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base_sha = write_weights(base.state_dict(), root, "base.safetensors")
    candidates = []
    for r in sorted(results, key=lambda r: (r.spec.app, r.spec.branchpoint)):
        rel = f"candidates/{r.spec.app}_b{r.spec.branchpoint}.safetensors"
        candidates.append(
            CandidateEntry(
                app=r.spec.app,
                branchpoint=r.spec.branchpoint,
                branchpoint_name=base.branchpoints[r.spec.branchpoint],
                trainable_params=r.trainable_params,
                precision=r.metrics.precision,
                recall=r.metrics.recall,
                f1=r.metrics.f1,
                accuracy=r.metrics.accuracy,
                train_seconds=r.train_seconds,
                count_mae=r.count_mae,
                map50=r.map50,
                map50_95=r.map50_95,
                weights=rel,
                sha256=write_weights(r.trainable_state, root, rel),
            )
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        fps=info.fps,
        world=info.world,
        data=info.data,
        base=BaseEntry(
            name=base.name,
            weights="base.safetensors",
            sha256=base_sha,
            input_size=info.input_size,
            normalization=info.normalization,
            num_classes=base.num_classes,
            branchpoints=list(base.branchpoints),
            segment_hashes=[segment_hash(s) for s in base.segments],
            segment_params=[sum(p.numel() for p in s.parameters()) for s in base.segments],
        ),
        latency=latency_entry(profile),
        apps=list(apps),
        candidates=candidates,
    )
    write_package(root, manifest)
    return manifest

"""Assemble an M-Package from a trained base, its latency profile and fine-tuned candidates."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stemcell.models import SegmentedNet, segment_hash
from stemcell.package.manifest import SCHEMA_VERSION, AppEntry, BaseEntry, CandidateEntry, LatencyEntry, Manifest
from stemcell.package.store import write_package, write_weights
from stemcell.training import CandidateResult, LatencyProfile
from stemcell.world import extract_events


def app_entry(name: str, target_class: str, presence: np.ndarray) -> AppEntry:
    """Base rate and mean event length of one class over the given presence timeline(s)."""
    runs = [e.stop - e.start for row in np.atleast_2d(presence) for e in extract_events(row)]
    return AppEntry(
        name=name,
        target_class=target_class,
        positive_fraction=float(np.mean(presence)),
        mean_event_frames=float(np.mean(runs)) if runs else 1.0,
    )


def latency_entry(profile: LatencyProfile) -> LatencyEntry:
    return LatencyEntry(
        device=profile.device,
        batch_sizes=list(profile.batch_sizes),
        segment_s={str(b): list(t) for b, t in profile.segment_s.items()},
        head_s={str(b): t for b, t in profile.head_s.items()},
        full_model_s={str(b): t for b, t in profile.full_model_s.items()},
    )


def build_package(
    root: str | Path,
    base: SegmentedNet,
    input_size: int,
    fps: float,
    world: dict[str, float | int],
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
                weights=rel,
                sha256=write_weights(r.trainable_state, root, rel),
            )
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        fps=fps,
        world=world,
        base=BaseEntry(
            name=base.name,
            weights="base.safetensors",
            sha256=base_sha,
            input_size=input_size,
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

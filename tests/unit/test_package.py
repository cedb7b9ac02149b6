"""M-Package: round trip, and refusal of tampered, truncated or foreign packages."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.models import SegmentedNet, make_app_model
from stemcell.package import PackageError, load_package
from stemcell.package.store import write_package, write_weights
from stemcell.training.finetune import CandidateResult
from tests.helpers.builders import random_frames, tiny_package_parts


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegmentedNet, list[CandidateResult]]:
    root = tmp_path_factory.mktemp("pkg")
    _, base, results = tiny_package_parts(root)
    return root, base, results


@pytest.fixture(scope="module")
def package_dir(built: tuple[Path, SegmentedNet, list[CandidateResult]]) -> Path:
    return built[0]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip_rebuilds_identical_candidates(built: tuple[Path, SegmentedNet, list[CandidateResult]]) -> None:
    package_dir, base, results = built
    pkg = load_package(package_dir)
    m = pkg.manifest
    assert [c.branchpoint for c in m.candidates_for("car")] == [0, 3, 6]
    assert len(m.base.segment_hashes) == pkg.base.num_segments
    assert set(m.latency.segment_s) == {"1", "4"}
    x = torch.from_numpy(random_frames(4, seed=5).frames).permute(0, 3, 1, 2).float() / 255
    for result in results:  # each candidate as trained, before saving, against the one loaded back
        before = make_app_model(base, result.spec.branchpoint, num_outputs=1)
        before.load_trainable_state_dict(result.trainable_state)
        loaded = pkg.app_model("car", result.spec.branchpoint)
        with torch.no_grad():
            assert torch.equal(before.eval()(x), loaded(x))
    assert [r.spec.branchpoint for r in results] == [0, 3, 6]
    with pytest.raises(KeyError, match="no candidate"):
        pkg.app_model("car", 2)


def test_candidate_weights_hold_only_the_trainable_part(package_dir: Path) -> None:
    from stemcell.models import load_safetensors

    m = load_package(package_dir).manifest
    deep, shallow = m.candidates_for("car")[-1], m.candidates_for("car")[0]
    assert not any(k.startswith("stem.") for k in load_safetensors(package_dir / deep.weights))
    assert deep.trainable_params < shallow.trainable_params


def test_tampered_candidate_is_refused(package_dir: Path, tmp_path: Path) -> None:
    root = _copy(package_dir, tmp_path / "p")
    f = root / "candidates" / "car_b3.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="sha256 mismatch"):
        load_package(root)


def test_truncated_base_is_refused(package_dir: Path, tmp_path: Path) -> None:
    root = _copy(package_dir, tmp_path / "p")
    f = root / "base.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(PackageError, match="base.safetensors"):
        load_package(root)


def test_missing_file_and_missing_manifest_are_clear(package_dir: Path, tmp_path: Path) -> None:
    root = _copy(package_dir, tmp_path / "p")
    (root / "candidates" / "car_b0.safetensors").unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(root)
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema_version=99), "schema_version 99"),
        (lambda m: m["candidates"][0].update(weights="../../etc/passwd.safetensors"), "weights"),
        (lambda m: m["candidates"][0].update(app="ghost"), "unknown app"),
        (lambda m: m.pop("base"), "base"),
        (lambda m: m["apps"][0].update(classes=["unicorn"]), r"classes \['unicorn'\] are not among data.classes"),
        (lambda m: m["apps"][0].update(task="size"), "task"),
        (lambda m: m["base"]["normalization"].update(std=[1, 1]), "normalization.std"),
    ],
)
def test_invalid_manifest_is_refused(package_dir: Path, tmp_path: Path, edit, message: str) -> None:
    root = _copy(package_dir, tmp_path / "p")
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=message):
        load_package(root)


def test_non_json_manifest(package_dir: Path, tmp_path: Path) -> None:
    root = _copy(package_dir, tmp_path / "p")
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(root)


def test_app_entry_describes_events_in_stream_frames() -> None:
    """Labels every 5th frame: a run of 2 labelled frames spans 10 stream frames."""
    from stemcell.package.build import app_entry

    entry = app_entry("a", ["x", "y"], [np.array([1, 1, 0, 1], bool), np.array([0, 0], bool)], task="count",
                      min_count=2, spacing=5.0)
    assert (entry.mean_event_frames, entry.positive_fraction) == (7.5, 0.5)
    assert (entry.classes, entry.task, entry.min_count) == (["x", "y"], "count", 2)


def test_package_files_are_readable_by_another_user_whatever_the_umask(package_dir: Path, tmp_path: Path) -> None:
    """safetensors writes 0600; a package built by one user must be servable by workers running as another."""
    manifest = load_package(package_dir).manifest
    root = tmp_path / "pkg"
    old = os.umask(0o077)
    try:
        write_weights({"w": torch.ones(3)}, root, "candidates/car_b2.safetensors")
        write_package(root, manifest)
    finally:
        os.umask(old)
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert modes == {".": 0o755, "candidates": 0o755, "candidates/car_b2.safetensors": 0o644, "manifest.json": 0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in package_dir.rglob("*") if p.is_file()} == {0o644}

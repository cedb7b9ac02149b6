"""Hostile input end to end: a seeded fuzz campaign against the real Serve app (zero 5xx, still
serving afterwards), exact answers to token abuse and image bombs, and pickle payloads refused by
every weights loader without running.

The campaign itself lives in `benchmarks/security_fuzz.py` (which runs a larger one; its requests are
built in `benchmarks/fuzz_cases.py`); this test runs a small seeded slice of every category of it.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
import torch
from ray import serve
from safetensors import SafetensorError

from benchmarks.fuzz_cases import _TRICKY_IDS, GOOD, Tokens, generate_cases
from benchmarks.harness import Deployment, deploy, write_serve_config
from benchmarks.security_fuzz import Result, register_fuzz_cameras, run_campaign
from stemcell.client import Camera
from stemcell.models import build_base
from stemcell.models.weights import load_torchvision_checkpoint
from stemcell.package.store import MANIFEST, PackageError, file_sha256, load_package
from stemcell.state.records import ID_PATTERN
from tests.helpers.builders import tiny_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

FRAME = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-pkg") / "pkg"
    tiny_package(root, branchpoints=(0, 6), apps=("car",))
    return root


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory, package: Path) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("fuzz")
    config = write_serve_config(root, package, app_name="stemcell-fuzz", namespace="stemcell-fuzz",
                                token_env="STEMCELL_FUZZ_ADMIN_TOKEN",
                                limits={"max_image_bytes": 1 << 20, "max_pixels": 1 << 20, "max_batch_frames": 8,
                                        "max_batch_bytes": 4 << 20})
    yield deploy(config)
    serve.shutdown()
    os.environ.pop("STEMCELL_FUZZ_ADMIN_TOKEN", None)


@pytest.fixture(scope="module")
def tokens(dep: Deployment) -> Tokens:
    return register_fuzz_cameras(dep)


@pytest.fixture(scope="module")
def results(dep: Deployment, tokens: Tokens) -> dict[str, Result]:
    cases = generate_cases(tokens, random.Random(0), mutations=40, random_bodies=16, frame=FRAME)
    assert len({c.name for c in cases}) == len(cases)
    return {r.case.name: r for r in run_campaign(dep.url, cases)}


def test_campaign_has_no_5xx_and_the_camera_still_works(dep: Deployment, tokens: Tokens,
                                                        results: dict[str, Result]) -> None:
    failed = {name: r.status for name, r in results.items() if r.failed}
    assert failed == {}
    assert len({r.case.category for r in results.values()}) == 10 and len(results) > 300
    with Camera(dep.url, tokens.good, GOOD, retries=0) as good:
        assert len(good.infer(FRAME)["results"]) == 1
    assert httpx.get(f"{dep.url}/readyz", timeout=30).json()["ready"] is True


def test_token_abuse_gets_exact_answers(results: dict[str, Result]) -> None:
    expected = {"no_token": 401, "wrong_token": 403, "other_camera": 403, "empty_bearer": 401, "basic": 401,
                "two_spaces": 401, "admin_prefix": 403, "two_auth_headers": 403, "lowercase_scheme": 200}
    for name, status in expected.items():
        assert results[f"{name}_frames"].status == status, name
        assert results[f"{name}_plan"].status == (status if status != 200 else 403), name  # a camera token is not admin
        assert results[f"{name}_add"].status == (status if status != 200 else 403), name
    assert results["camera_on_admin_plan"].status == 403 and results["camera_on_admin_add"].status == 403


def test_bombs_are_refused_before_decoding(results: dict[str, Result]) -> None:
    for name in ("png_50000x50000", "png_max_u32", "png_1x2^31", "jpeg_65535x65535"):
        for variant in (name, name + "_batch"):
            assert results[variant].status == 413, variant
            assert results[variant].seconds < 2.0, variant  # refused from the header, not after a decode
    for name in ("png_zero_width", "jpeg_zero_height", "jpeg_1x65535"):  # within the pixel limit, but corrupt
        assert results[name].status == 400, name
    # a zlib bomb inside a small declared image decodes only what the header declares: a valid 64x64 frame
    assert results["png_idat_zlib_bomb"].status == 200 and results["png_idat_zlib_bomb"].seconds < 5.0


def _camera_route_status(ident: str) -> int:
    """What `POST /cameras/{ident}/frames` with another camera's token answers (README, HTTP API): the
    server routes on the percent-decoded path, so an id that decodes to a `/` matches no route (404);
    the id is checked before the token (400 when invalid); a valid id the token does not open is 403."""
    decoded = unquote(ident)
    if "/" in decoded:
        return 404
    return 403 if ID_PATTERN.fullmatch(decoded) else 400


def test_path_tricks_never_reach_another_resource(results: dict[str, Result]) -> None:
    # a camera's token opens its own camera only, however the id is spelt (the admin token may create valid ids)
    tricks = {r.case.name: r for r in results.values()
              if r.case.category == "path_ids" and r.case.name.startswith("frames_camera")}
    assert len(tricks) == len(_TRICKY_IDS)
    expected = {f"frames_camera_{i}_{ident[:24]}": _camera_route_status(ident) for i, ident in enumerate(_TRICKY_IDS)}
    assert {name: r.status for name, r in tricks.items()} == expected
    for name in ("raw_path_/cameras/../admin/plan", "raw_path_/cameras/%2E%2E/admin/plan"):
        assert results[name].status == 404, name  # no route: never the admin plan with a camera token


def test_oversized_multipart_is_413_or_400(results: dict[str, Result]) -> None:
    for name in ("too_many_parts", "too_many_fields", "oversized_part", "oversized_field"):
        assert results[name].status == 413, name
    for name in ("no_boundary", "wrong_boundary", "unterminated", "no_disposition", "frames_as_field", "empty_body"):
        assert results[name].status == 400, name


# --------------------------------------------------------------------------- malicious model files
class _Payload:
    """Unpickling this calls Path.touch(marker): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    return path


def test_the_payload_is_armed(tmp_path: Path) -> None:
    """Without weights_only the payload runs: the refusals below are real refusals."""
    marker = tmp_path / "ran"
    torch.load(_evil_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.safetensors"])
def test_checkpoint_loader_refuses_pickle_payloads(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "ran"
    path = _evil_checkpoint(tmp_path / name, marker)
    with pytest.raises((pickle.UnpicklingError, SafetensorError)):
        load_torchvision_checkpoint(build_base("tiny_cnn"), path)
    assert not marker.exists()


def _rewrite_manifest_sha(root: Path, relative: str) -> None:
    manifest = json.loads((root / MANIFEST).read_text())
    sha = file_sha256(root / relative)
    if manifest["base"]["weights"] == relative:
        manifest["base"]["sha256"] = sha
    for c in manifest["candidates"]:
        if c["weights"] == relative:
            c["sha256"] = sha
    (root / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("target", ["base", "candidate"])
def test_package_loader_refuses_pickle_payloads(tmp_path: Path, package: Path, target: str) -> None:
    evil = tmp_path / "evil-pkg"
    shutil.copytree(package, evil)
    manifest = json.loads((evil / MANIFEST).read_text())
    relative = manifest["base"]["weights"] if target == "base" else manifest["candidates"][-1]["weights"]
    marker = tmp_path / "ran"
    _evil_checkpoint(evil / relative, marker)
    with pytest.raises(PackageError, match="sha256 mismatch"):  # tampering alone is caught by the hashes
        load_package(evil)
    _rewrite_manifest_sha(evil, relative)  # an attacker who can also rewrite the manifest
    with pytest.raises(SafetensorError):
        pkg = load_package(evil)
        pkg.app_model(manifest["candidates"][-1]["app"], manifest["candidates"][-1]["branchpoint"])
    assert not marker.exists()


def test_malicious_package_over_http_is_refused(dep: Deployment, tmp_path: Path, package: Path) -> None:
    evil = tmp_path / "evil-pkg"
    shutil.copytree(package, evil)
    relative = json.loads((evil / MANIFEST).read_text())["base"]["weights"]
    marker = tmp_path / "ran"
    _evil_checkpoint(evil / relative, marker)
    _rewrite_manifest_sha(evil, relative)
    r = httpx.post(f"{dep.url}/admin/apps", json={"app": "car", "package_dir": str(evil)},
                   headers={"Authorization": f"Bearer {dep.admin_token}"}, timeout=30)
    assert r.status_code == 409  # not the package the executors serve: nothing from it is loaded
    assert not marker.exists()

"""TensorRT engine cache: key derivation, invalidation, damaged files, readable modes (no GPU needed)."""
from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemcell.accel import EngineCache, EngineKey

KEY = EngineKey("a" * 64, (16, 8, 8), "fp16", 32, "NVIDIA L4", "10.13.0")


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would make files private: the cache must set 0644 itself."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_every_key_field_changes_the_digest() -> None:
    changes = {"segment_hash": "b" * 64, "input_shape": (16, 8, 9), "precision": "bf16", "max_batch": 64,
               "gpu_model": "NVIDIA A10G", "tensorrt_version": "10.14.0"}
    digests = {dataclasses.replace(KEY, **{field: value}).digest() for field, value in changes.items()}
    assert len(digests) == len(changes) and KEY.digest() not in digests
    assert EngineKey("a" * 64, (16, 8, 8), "fp16", 32, "NVIDIA L4", "10.13.0").digest() == KEY.digest()


def test_store_then_load_gives_the_same_bytes_only_for_the_same_key(tmp_path: Path, strict_umask: None) -> None:
    cache = EngineCache(tmp_path / "engines")
    assert cache.load(KEY) is None
    path = cache.store(KEY, b"engine-bytes")
    assert cache.load(KEY) == b"engine-bytes"
    assert cache.load(dataclasses.replace(KEY, tensorrt_version="10.14.0")) is None  # a TensorRT upgrade rebuilds
    for file in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644
    assert cache.keys() == [KEY]


@pytest.mark.parametrize("damage", ["truncate", "flip", "record"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"0123456789")
    if damage == "truncate":
        path.write_bytes(b"01234")
    elif damage == "flip":
        path.write_bytes(b"0123456788")
    else:
        path.with_suffix(".json").write_text("{not json")
    assert cache.load(KEY) is None
    assert not path.exists()


def test_evict_stale_removes_engines_of_other_gpus_and_tensorrt_versions(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    other_gpu = dataclasses.replace(KEY, gpu_model="NVIDIA A10G")
    old_trt = dataclasses.replace(KEY, segment_hash="c" * 64, tensorrt_version="10.0.1")
    for key in (KEY, other_gpu, old_trt):
        cache.store(key, key.digest().encode())
    assert cache.evict_stale("NVIDIA L4", "10.13.0") == 2
    assert cache.keys() == [KEY] and cache.load(KEY) == KEY.digest().encode()

"""Sparse update codec: bit-exact round trips, refusal of damaged payloads, merging, catch-up rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemcell.learning.codec import (
    SparseUpdate,
    UpdateFormatError,
    UpdateMismatchError,
    apply_update,
    catch_up_update,
    decode,
    encode,
    full_update,
    make_update,
    merge_updates,
)
from stemcell.learning.packing import decode_mask, encode_mask, varint_decode, varint_encode


def _state(seed: int, channels: int = 16) -> dict[str, torch.Tensor]:
    """fp16-representable weights, as the retraining loop keeps them (so full updates are exact)."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "upper.0.weight": torch.randn(2 * channels, channels, 3, 3, generator=g) * 0.1,
        "head.fc.bias": torch.randn(3, generator=g),
    }
    return {k: v.half().float() for k, v in state.items()}


def _perturb(state: dict[str, torch.Tensor], fraction: float, seed: int) -> tuple[dict, dict]:
    """New state differing from `state` on a random `fraction` of coordinates, and that mask."""
    g = torch.Generator().manual_seed(seed)
    mask = {k: torch.rand(v.shape, generator=g) < fraction for k, v in state.items()}
    new = {k: torch.where(mask[k], v + torch.randn(v.shape, generator=g) * 0.01, v) for k, v in state.items()}
    return new, mask


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.numpy().view(np.uint32)


def test_round_trip_is_bit_exact_and_apply_gives_fp16_values() -> None:
    old = _state(0)
    new, mask = _perturb(old, 0.05, 1)
    update = make_update(old, new, version=7, base_version=6, mask=mask)
    back = decode(encode(update))
    assert (back.version, back.base_version, back.specs) == (7, 6, update.specs)
    assert np.array_equal(back.mask, update.mask)
    assert np.array_equal(back.values.view(np.uint16), update.values.view(np.uint16))
    applied = apply_update(old, back, current_version=6)
    for name in old:
        want = torch.where(mask[name], new[name].half().float(), old[name])  # fp16 -> fp32 under the mask
        assert np.array_equal(_bits(applied[name]), _bits(want))
        assert np.array_equal(_bits(old[name]), _bits(_state(0)[name]))  # input not modified


def test_mask_defaults_to_changed_coordinates() -> None:
    old = _state(0)
    new, mask = _perturb(old, 0.1, 2)
    update = make_update(old, new, version=1, base_version=0)
    assert np.array_equal(update.mask, np.concatenate([m.flatten().numpy() for m in mask.values()]))


def test_full_update_has_all_coordinates_and_costs_no_mask_bytes() -> None:
    state = _state(3)
    update = full_update(state, version=4)
    assert update.is_full and update.base_version is None
    data = encode(update)
    back = decode(data)
    assert back.is_full and np.array_equal(back.values.view(np.uint16), update.values.view(np.uint16))
    applied = apply_update(_state(9), back, current_version=123)  # a full update fits any version
    for name in state:
        assert torch.equal(applied[name], state[name].half().float())


def test_sparse_update_is_over_ten_times_smaller_than_full_at_five_percent() -> None:
    old = _state(0, channels=48)  # ~41k coordinates, a small upper segment
    new, mask = _perturb(old, 0.05, 1)
    sparse = len(encode(make_update(old, new, version=1, base_version=0, mask=mask)))
    full = len(encode(full_update(new, version=1)))
    assert full / sparse > 10.0


@pytest.mark.parametrize("damage", ["flip", "truncate_1", "truncate_half", "empty", "magic", "extra"])
def test_corrupt_or_truncated_payloads_are_refused(damage: str) -> None:
    old = _state(0)
    new, mask = _perturb(old, 0.05, 1)
    data = bytearray(encode(make_update(old, new, version=1, base_version=0, mask=mask)))
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate_1":
        data = data[:-1]
    elif damage == "truncate_half":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "magic":
        data[:4] = b"JUNK"
    else:
        data += b"\x00"
    with pytest.raises(UpdateFormatError):
        decode(bytes(data))


def test_apply_refuses_wrong_base_version_and_shapes() -> None:
    old = _state(0)
    new, mask = _perturb(old, 0.05, 1)
    update = make_update(old, new, version=3, base_version=2, mask=mask)
    with pytest.raises(UpdateMismatchError):
        apply_update(old, update, current_version=1)
    with pytest.raises(UpdateMismatchError):
        apply_update({**old, "head.fc.bias": torch.zeros(4)}, update, current_version=2)


def _chain(length: int) -> tuple[list[dict], list[SparseUpdate]]:
    states, updates = [_state(0)], []
    for v in range(1, length + 1):
        new, mask = _perturb(states[-1], 0.05, 100 + v)
        updates.append(make_update(states[-1], new, version=v, base_version=v - 1, mask=mask))
        states.append(apply_update(states[-1], updates[-1], current_version=v - 1))
    return states, updates


def test_merge_equals_sequential_application_later_wins() -> None:
    states, updates = _chain(3)
    overlap = updates[0].mask & updates[2].mask
    assert overlap.any()  # the test needs coordinates written twice
    merged = merge_updates(updates)
    assert (merged.base_version, merged.version) == (0, 3)
    assert np.array_equal(merged.mask, updates[0].mask | updates[1].mask | updates[2].mask)
    applied = apply_update(states[0], decode(encode(merged)), current_version=0)
    for name in applied:
        assert torch.equal(applied[name], states[3][name])


def test_merge_refuses_broken_chain_and_restarts_at_a_full_update() -> None:
    states, updates = _chain(3)
    with pytest.raises(UpdateMismatchError):
        merge_updates([updates[0], updates[2]])
    full = full_update(states[2], version=2)
    merged = merge_updates([updates[0], full, updates[2]])
    assert merged.is_full and merged.version == 3
    for name, t in apply_update(_state(5), merged, current_version=None).items():
        assert torch.equal(t, states[3][name])


def test_catch_up_rule() -> None:
    states, updates = _chain(5)
    history = {u.version: u for u in updates}
    current = states[5]
    assert catch_up_update(5, history, current, version=5) is None
    behind = catch_up_update(3, history, current, version=5)
    assert behind is not None and not behind.is_full and behind.base_version == 3
    for name, t in apply_update(states[3], behind, current_version=3).items():
        assert torch.equal(t, current[name])
    for edge in (None, 42, -1):  # never seen, unknown, or not in history
        assert catch_up_update(edge, history, current, version=5).is_full
    assert catch_up_update(0, history, current, version=5, max_chain=3).is_full  # too far behind
    assert catch_up_update(0, history, current, version=5, max_fraction=0.01).is_full  # merge ~ full size


def test_varint_and_mask_layouts_round_trip() -> None:
    values = np.array([0, 1, 127, 128, 16383, 16384, 2**35 + 3, 2**63 - 1], dtype=np.uint64)
    assert np.array_equal(varint_decode(varint_encode(values)), values)
    rng = np.random.default_rng(0)
    for density in (0.0, 0.001, 0.05, 0.5, 1.0):
        mask = rng.random(50_000) < density
        mask[-1] = density > 0  # exercise the last coordinate
        method, data = encode_mask(mask)
        assert np.array_equal(decode_mask(method, data, mask.size), mask)
    clustered = np.zeros(50_000, dtype=bool)
    clustered[1000:3500] = True  # a whole tensor: run-friendly
    method, data = encode_mask(clustered)
    assert len(data) < 100 and np.array_equal(decode_mask(method, data, clustered.size), clustered)


def test_random_mask_compresses_near_entropy() -> None:
    mask = np.random.default_rng(1).random(200_000) < 0.05
    _, data = encode_mask(mask)
    entropy_bytes = mask.size * -(0.05 * np.log2(0.05) + 0.95 * np.log2(0.95)) / 8
    assert len(data) < 1.1 * entropy_bytes


def test_non_float_tensors_and_fp16_overflow_are_refused() -> None:
    with pytest.raises(ValueError):
        full_update({"n": torch.zeros(3, dtype=torch.int64)}, version=0)
    with pytest.raises(ValueError):
        full_update({"w": torch.tensor([1e6])}, version=0)

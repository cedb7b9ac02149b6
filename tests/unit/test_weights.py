"""Weights loading refuses pickled code and mismatched checkpoints."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from stemcell.models import build_base, segment_hash


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker  # the file the payload would create: this test's own, not a shared /tmp path

    def __reduce__(self):  # noqa: ANN204 - a malicious pickle: would run a shell command if unpickled
        import os

        return (os.system, (f"echo pwned > {self.marker}",))


def test_local_torchvision_checkpoint_is_loaded(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    base = build_base("resnet18", torchvision_weights=path)
    assert torch.equal(base.segments[0][0].weight, reference.conv1.weight)


def test_pickle_payload_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps({"conv1.weight": _Payload(marker)}))
    with pytest.raises(pickle.UnpicklingError):
        build_base("resnet18", torchvision_weights=path)
    assert not marker.exists()


def test_wrong_architecture_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"mnv3.pth: weights do not fit architecture resnet18: 1\d\d missing keys \['bn1"):
        build_base("resnet18", torchvision_weights=path)
    with pytest.raises(FileNotFoundError):
        build_base("resnet18", torchvision_weights=tmp_path / "missing.pth")


def test_segment_hash_identifies_the_weights() -> None:
    one, two = build_base("resnet18"), build_base("resnet18")
    assert segment_hash(one.segments[1]) == segment_hash(two.segments[1])  # two builds, same seed: same weights
    assert segment_hash(one.segments[1]) != segment_hash(one.segments[2])  # other weights: another hash
    with torch.no_grad():
        next(two.segments[1].parameters()).view(-1)[0] += 1e-3  # one weight changed
    assert segment_hash(one.segments[1]) != segment_hash(two.segments[1])


def test_checkpoint_with_a_wrong_shape_names_the_key(tmp_path: Path) -> None:
    state = torchvision.models.efficientnet_b0(weights=None).state_dict()
    state["features.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "b0.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 with other shapes \['features.0.0.weight \(8, 3, 3, 3\) vs \(32, 3, 3, 3\)"):
        build_base("efficientnet_b0", torchvision_weights=path)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "resnet50", "efficientnet_b0"])
def test_imagenet_state_dict_is_used_as_is(tmp_path: Path, name: str) -> None:
    """A torchvision state dict (random here: nothing can be downloaded) lands unchanged in the segments."""
    reference = getattr(torchvision.models, name)(weights=None)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    base = build_base(name, torchvision_weights=path)
    ours = [t for s in base.segments for t in s.state_dict().values()]
    theirs = [v for k, v in reference.state_dict().items() if not k.startswith(("fc.", "classifier."))]
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))

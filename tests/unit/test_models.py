"""Model library: segmenting is exact, app models share the stem, hashes identify weights."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from stemcell.models import build_base, list_bases, make_app_model, segment_hash, to_input

ALL_BASES = tuple(list_bases())  # every registered base: a new one is tested by registering it
TORCHVISION_BASES = tuple(b for b in ALL_BASES if b != "tiny_cnn")


def test_registry_lists_the_builtin_bases() -> None:
    assert {"tiny_cnn", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet50", "efficientnet_b0"} <= set(ALL_BASES)
    with pytest.raises(ValueError, match="unknown base model"):
        build_base("vgg_nope")


@pytest.mark.parametrize("name", ALL_BASES)
def test_segments_in_order_equal_the_whole_torchvision_backbone(name: str) -> None:
    base = build_base(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = base(x)
        piecewise = base.head(base.features(base.features(x, 0, 3), 3))
    assert torch.equal(whole, piecewise)
    assert len(base.branchpoints) == base.num_segments + 1
    assert 5 <= base.num_segments <= 10


@pytest.mark.parametrize("name", TORCHVISION_BASES)
def test_segmented_backbone_matches_original_torchvision_forward(name: str) -> None:
    """Cutting must not change the maths: compare with torchvision's own forward pass on its features."""
    import torchvision

    reference = getattr(torchvision.models, name)(weights=None).eval()
    base = build_base(name)
    state = {k: v for k, v in reference.state_dict().items()}
    # copy the reference weights into our segments by parameter order (same modules, regrouped)
    ours = [p for s in base.segments for p in s.state_dict().values()]
    theirs = [v for k, v in state.items() if not k.startswith(("fc.", "classifier."))]
    assert len(ours) == len(theirs)
    with torch.no_grad():
        for dst, src in zip(ours, theirs):
            dst.copy_(src)
        x = torch.randn(2, 3, 64, 64)
        if name.startswith("resnet"):
            m = reference
            expected = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
        else:
            expected = reference.features(x)
        assert torch.allclose(base.features(x), expected, atol=1e-5)


def test_app_model_shares_stem_objects_and_freezes_them() -> None:
    base = build_base("tiny_cnn")
    app = make_app_model(base, 3, num_outputs=1)
    assert all(a is b for a, b in zip(app.stem, base.segments[:3]))
    assert all(not p.requires_grad for p in app.stem.parameters())
    assert all(p.requires_grad for p in app.upper.parameters())
    app.train()
    assert not app.stem.training and app.upper.training  # BN stats of the shared stem never move
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(app.upper_forward(app.stem_features(x)), app(x))


def test_app_model_bounds_checked() -> None:
    base = build_base("tiny_cnn")
    with pytest.raises(ValueError, match="branchpoint"):
        make_app_model(base, base.num_segments + 1, 1)


def test_segment_hash_identifies_bytes_not_position() -> None:
    base = build_base("tiny_cnn")
    twin = copy.deepcopy(base.segments[2])
    assert segment_hash(twin) == segment_hash(base.segments[2])
    assert segment_hash(base.segments[2]) != segment_hash(base.segments[3])
    with torch.no_grad():
        twin[0].weight[0, 0, 0, 0] += 1e-6
    assert segment_hash(twin) != segment_hash(base.segments[2])


def test_seeded_build_is_deterministic() -> None:
    a, b = build_base("tiny_cnn", seed=3), build_base("tiny_cnn", seed=3)
    assert [segment_hash(s) for s in a.segments] == [segment_hash(s) for s in b.segments]
    assert segment_hash(build_base("tiny_cnn", seed=4).segments[0]) != segment_hash(a.segments[0])


def test_to_input_validates_and_resizes() -> None:
    frames = np.zeros((2, 48, 40, 3), np.uint8)
    assert to_input(frames, 32).shape == (2, 3, 32, 32)
    assert to_input(frames[0]).shape == (1, 3, 48, 40)
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_input(frames.astype(np.float32))


def test_to_input_applies_the_given_normalization() -> None:
    frames = np.full((1, 4, 4, 3), 255, np.uint8)
    x = to_input(frames, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
    assert torch.allclose(to_input(frames)[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                                    (1 - 0.406) / 0.225]))  # ImageNet by default

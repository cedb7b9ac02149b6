"""App models: a shared frozen stem + trainable upper segments + a per-app head."""
from __future__ import annotations

import copy

import torch
from torch import nn

from stemcell.models.detection import DetectHead
from stemcell.models.segmented import ClassifierHead, SegmentedNet


class AppModel(nn.Module):
    """Mainstream candidate: `stem` modules are the base's own objects, frozen and kept in eval mode.

    Keeping the stem in eval mode even while the app trains matters: BatchNorm running statistics
    would otherwise drift per app and the stem would stop being shareable.
    """

    def __init__(self, stem: list[nn.Module], upper: list[nn.Module], head: nn.Module, branchpoint: int) -> None:
        super().__init__()
        self.stem = nn.ModuleList(stem)
        self.upper = nn.ModuleList(upper)
        self.head = head
        self.branchpoint = branchpoint
        for p in self.stem.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> AppModel:
        super().train(mode)
        self.stem.eval()
        return self

    def stem_features(self, x: torch.Tensor) -> torch.Tensor:
        for segment in self.stem:
            x = segment(x)
        return x

    def upper_forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the activation at this app's branchpoint (what the stem tree fans out)."""
        for segment in self.upper:
            features = segment(features)
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper_forward(self.stem_features(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what differs from the base: upper segments + head (what an M-Package stores)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("stem.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            raise ValueError(
                f"trainable weights do not match the model: missing={sorted(expected - set(state))[:5]} "
                f"unexpected={sorted(set(state) - expected)[:5]}"
            )
        self.load_state_dict(state, strict=False)


def make_app_model(base: SegmentedNet, branchpoint: int, num_outputs: int, head: nn.Module | None = None) -> AppModel:
    """Cut `base` after `branchpoint` segments: share [0, b), deep-copy [b, S) for fine-tuning.

    The head is a `num_outputs` classifier unless another `head` (reading the base's last map) is given.
    """
    if not 0 <= branchpoint <= base.num_segments:
        raise ValueError(f"branchpoint must be in [0, {base.num_segments}], got {branchpoint}")
    stem = list(base.segments[:branchpoint])
    upper = [copy.deepcopy(s) for s in base.segments[branchpoint:]]
    if head is None:
        head = ClassifierHead(base.feature_dim, num_outputs)
        if num_outputs == base.num_classes:
            head.load_state_dict(base.head.state_dict())
    model = AppModel(stem, upper, head, branchpoint)
    for p in model.upper.parameters():
        p.requires_grad_(True)
    return model.eval()


def make_task_model(base: SegmentedNet, branchpoint: int, task: str, num_classes: int = 1) -> AppModel:
    """The model an app's task needs: one output (presence logit, count log-rate) or, for `detect`,
    a CenterNet head with one heatmap per app class."""
    if task == "detect":
        return make_app_model(base, branchpoint, 1, head=DetectHead(base.feature_dim, num_classes))
    return make_app_model(base, branchpoint, num_outputs=1)

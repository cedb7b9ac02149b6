"""Weights on disk: safetensors for everything Stemcell writes; user torch checkpoints only with weights_only."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict as safetensors (tensors made contiguous and unshared, as the format needs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))
    return path


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (no code execution is possible, unlike pickle)."""
    return load_file(str(path))


def load_torchvision_checkpoint(model: nn.Module, path: str | Path, architecture: str = "") -> None:
    """Load a user's local torchvision state_dict into `model`, refusing pickled code.

    `weights_only=True` makes torch refuse any pickle payload that is not plain tensors/containers.
    The classifier (`fc.*` / `classifier.*`) is skipped: Stemcell brings its own heads. Keys or
    shapes that do not fit `architecture` are an error that names them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    backbone = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    own = model.state_dict()
    arch = architecture or type(model).__name__
    missing = sorted(k for k in own if k not in backbone and not k.startswith(("fc.", "classifier.")))
    unexpected = sorted(k for k in backbone if k not in own)
    wrong = sorted(k for k, v in backbone.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        shapes = [f"{k} {tuple(backbone[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]]
        raise ValueError(
            f"{path}: weights do not fit architecture {arch}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}, {len(wrong)} with other shapes {shapes}"
        )
    model.load_state_dict(backbone, strict=False)

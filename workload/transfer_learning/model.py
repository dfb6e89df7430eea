"""resnet18 with a new `fc`: weights from torchvision's API and cache, none, or a file."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from transfer_learning.errors import WorkloadError

WEIGHT_NAMES = ("none", "imagenet")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        blob: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise WorkloadError(f"cannot read weights file {path}: {exc.__class__.__name__}") from None
    # Our model.pt and checkpoint.pt wrap the state dict; torchvision's .pth files are bare.
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        blob = blob["model"]
    if isinstance(blob, dict) and "state_dict" in blob and isinstance(blob["state_dict"], dict):
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise WorkloadError(f"weights file {path} holds no resnet18 state dict")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def build_model(weights: str, num_classes: int, mode: str) -> nn.Module:
    """A resnet18 whose `fc` is a fresh Linear(512, num_classes); frozen backbone if asked."""
    if weights == "imagenet":
        try:
            model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except (urllib.error.URLError, OSError, ConnectionError) as exc:
            raise WorkloadError(
                "cannot download the ImageNet weights for resnet18 "
                f"({getattr(exc, 'reason', exc)}); offline, use --weights none "
                "or --weights PATH to a local .pth file (torchvision caches it under "
                "$TORCH_HOME/hub/checkpoints)"
            ) from None
    elif weights == "none":
        model = resnet18(weights=None)
    else:
        path = Path(weights)
        if not path.is_file():
            raise WorkloadError(
                f"unknown --weights {weights!r}: use none, imagenet or the path of a weights file"
            )
        model = resnet18(weights=None)
        state = {k: v for k, v in _load_file(path).items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise WorkloadError(
                f"weights file {path} does not match resnet18 "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
            )
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if mode == "feature-extract":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    return model


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Everything of a torchvision ResNet up to (not including) `fc`."""
    m: Any = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def load_model_file(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Read a model.pt written by `train` back into a resnet18."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"model file {p} does not exist: pass --model OUT/<run-id>/model.pt")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        model = build_model("none", len(blob["classes"]), "finetune")
        model.load_state_dict(blob["state_dict"])
    except WorkloadError:
        raise
    except Exception as exc:  # a corrupt or foreign file
        raise WorkloadError(f"cannot read model file {p} ({exc.__class__.__name__})") from None
    return model, blob

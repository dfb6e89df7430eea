"""resnet18 construction: weights sources, frozen backbone, clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from transfer_learning.errors import WorkloadError
from transfer_learning.model import backbone_features, build_model


def test_new_head_and_frozen_backbone() -> None:
    model = build_model("none", 3, "feature-extract")
    assert model.fc.out_features == 3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert all(p.requires_grad for p in build_model("none", 3, "finetune").parameters())


def test_backbone_features_feed_fc() -> None:
    model = build_model("none", 4, "finetune").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.fc(backbone_features(model, x)), model(x), atol=1e-5)


def test_weights_file_restores_backbone_not_head(tmp_path: Path) -> None:
    source = build_model("none", 10, "finetune")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = build_model(str(path), 2, "finetune")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 2


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WorkloadError, match="cannot read weights file"):
        build_model(str(path), 2, "finetune")


def test_unknown_weights_name() -> None:
    with pytest.raises(WorkloadError, match=r"unknown --weights 'imagenet21k'.*none, imagenet"):
        build_model("imagenet21k", 2, "finetune")


def test_imagenet_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torchvision must download

    def no_network(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WorkloadError, match=r"ImageNet weights.*--weights none.*--weights PATH"):
        build_model("imagenet", 2, "finetune")
    assert not list(tmp_path.rglob("*.pth"))

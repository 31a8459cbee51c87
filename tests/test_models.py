"""Model registry and the prunable-layer rule (spec §3)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from asfp_explorer.config import MODELS
from asfp_explorer.models import build_model, model_names, prunable_layers
from asfp_explorer.models.cifar_resnet import CifarResNet
from asfp_explorer.models.torchvision_resnets import TorchvisionResNet

CIFAR_COUNTS = {"resnet20": 19, "resnet32": 31, "resnet56": 55, "resnet110": 109}
# stem + (2 convs x blocks) for basic blocks, stem + (3 convs x blocks) for bottlenecks
TORCHVISION_COUNTS = {"resnet18": 1 + 2 * 8, "resnet34": 1 + 2 * 16, "resnet50": 1 + 3 * 16,
                      "resnet101": 1 + 3 * 33}


def test_every_configured_model_is_registered():
    assert set(MODELS) <= set(model_names())


@pytest.mark.parametrize("name,count", CIFAR_COUNTS.items())
def test_cifar_prunable_counts(name, count):
    model = build_model(name)
    convs = prunable_layers(model)
    assert len(convs) == count
    assert all(isinstance(c, nn.Conv2d) for c in convs.values())
    assert "fc" not in convs


@pytest.mark.parametrize("name,millions", [("resnet20", 0.27), ("resnet56", 0.85)])
def test_cifar_parameter_counts(name, millions):
    params = sum(p.numel() for p in build_model(name).parameters())
    assert round(params / 1e6, 2) == millions


@pytest.mark.parametrize("name,count", TORCHVISION_COUNTS.items())
def test_torchvision_rule(name, count):
    model = build_model(name, num_classes=10)
    names = list(prunable_layers(model))
    assert len(names) == count
    assert names[0] == "conv1"
    assert not any("downsample" in n for n in names)
    assert "fc" not in names
    # every conv except the projection shortcuts, so the block's last conv is included
    all_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(names) == sorted(n for n in all_convs if "downsample" not in n)
    last = "layer1.0.conv3" if name in ("resnet50", "resnet101") else "layer1.0.conv2"
    assert last in names
    # forward order: the order convs are called in
    called = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: called.append(n))
             for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert called == names


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_is_torchvisions(depth):
    ours = TorchvisionResNet(depth, num_classes=7)
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))


def test_torchvision_in_channels_for_digits():
    model = build_model("resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_rule_survives_deepcopy_and_state_dict(name):
    model = build_model(name)
    names = list(prunable_layers(model))
    clone = copy.deepcopy(model)
    assert list(prunable_layers(clone)) == names
    fresh = build_model(name)
    fresh.load_state_dict(model.state_dict())
    assert list(prunable_layers(fresh)) == names


def test_unknown_model_and_depth():
    with pytest.raises(ValueError, match="model: unknown 'resnet7'"):
        build_model("resnet7")
    with pytest.raises(ValueError, match="depth: 19"):
        TorchvisionResNet(19)
    with pytest.raises(ValueError, match="depth: 21"):
        CifarResNet(21)


class Plain(nn.Module):
    """A user's own CNN without prunable_conv_names()."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = self.c2(x)
        return self.head(x.mean((2, 3)))


def test_prunable_layers_falls_back_to_tracing():
    convs = prunable_layers(Plain(), (3, 16, 16))
    assert list(convs) == ["c1"]  # c2's output goes to .mean() and the classifier
    assert list(prunable_layers(Plain())) == ["c1"]  # default probe size


def test_wrong_hand_made_rule_is_refused():
    model = Plain()
    model.prunable_conv_names = lambda: ["b1"]
    with pytest.raises(TypeError, match="'b1'.*not an nn.Conv2d"):
        prunable_layers(model)

"""CIFAR ResNet initialisation as in the authors' code (spec §4): convs N(0, 2/(k²·C_out))."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asfp_explorer.models import build_model


@pytest.mark.parametrize("depth", [20, 56])
def test_convs_are_fan_out_normal_and_the_classifier_bias_is_zero(depth):
    torch.manual_seed(0)
    model = build_model(f"resnet{depth}", 10, 3)
    weights: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            weights.setdefault((m.out_channels, m.in_channels), []).append(m.weight.detach().flatten())
    for (c_out, c_in), ws in weights.items():
        w = torch.cat(ws)
        fan_out = math.sqrt(2.0 / (9 * c_out))
        # Enough samples in every shape group for a 10 % band; fan-in differs where C_in != C_out.
        assert w.numel() >= 400
        assert w.std().item() == pytest.approx(fan_out, rel=0.1), (c_out, c_in)
        assert abs(w.mean().item()) < 0.1 * fan_out
    assert torch.all(model.fc.bias == 0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_the_stem_is_not_fan_in():
    """The stem (3 -> 16) tells the two rules apart: fan-in would give std 0.27, fan-out 0.118."""
    torch.manual_seed(1)
    stds = [build_model("resnet20", 10, 3).conv1.weight.std().item() for _ in range(5)]
    assert max(stds) < 0.16

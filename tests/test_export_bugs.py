"""Two ways the compact export used to go wrong, against the plainly masked model.

1. A pruned conv's output added to a (1, C, H, W) parameter (a positional embedding) was taken
   for a residual addition, because the shape probe ran at batch 1.
2. `skip = x; x += f(x); torch.cat([x, skip])`: fx records the in-place add as a new tensor,
   so the graph's `skip` kept the old `x` while the model's `skip` *is* the overwritten tensor.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import support
from asfp_explorer.export import compact
from asfp_explorer.models.tracing import TraceError, trace


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """The shared trained-like BN values (tests/support.py), in eval mode."""
    return support.randomise_bn(model, seed).eval()


def half_masks(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """Every other filter pruned in each named conv."""
    modules = dict(model.named_modules())
    return {n: torch.arange(modules[n].out_channels) % 2 == 0 for n in names}


class PositionalEmbedding(nn.Module):
    """conv -> BN -> + a learned (1, C, H, W) map -> ReLU -> conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pos = nn.Parameter(torch.randn(1, 8, 16, 16))
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)) + self.pos)
        x = self.conv2(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PositionalBuffer(PositionalEmbedding):
    """The same with the map as a buffer, added on the left."""

    def __init__(self):
        super().__init__()
        del self.pos
        self.register_buffer("pos", torch.randn(1, 8, 16, 16))

    def forward(self, x):
        x = F.relu(self.pos + self.bn1(self.conv1(x)))
        x = self.conv2(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("cls", [PositionalEmbedding, PositionalBuffer])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_parameter_added_to_a_pruned_conv_is_no_residual_stream(cls, batch):
    torch.manual_seed(0)
    model = randomise_bn(cls())
    masks = half_masks(model, ["conv1", "conv2"])
    small = compact(model, masks, (3, 16, 16))
    support.assert_equivalent(model, small, masks, (batch, 3, 16, 16), rtol=1e-5)


class InplaceSkip(nn.Module):
    """`skip = x; x += bn(conv(x)); cat([x, skip])`: both halves are the overwritten tensor."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(16, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        skip = x
        x += self.bn(self.conv(x))
        x = torch.cat([x, skip], dim=1)
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


class InplaceMethodSkip(InplaceSkip):
    """The same with `x.add_(...)` and an in-place ReLU after it."""

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        skip = x
        x.add_(self.bn(self.conv(x)))
        F.relu(x, inplace=True)
        x = torch.cat([x, skip], dim=1)
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


class InplaceIntoView(InplaceSkip):
    """An in-place add whose target is read later through a view: refused."""

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        first = x[:, :4]
        x += self.bn(self.conv(x))
        x = torch.cat([x, first, first], dim=1)
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


@pytest.mark.parametrize("cls", [InplaceSkip, InplaceMethodSkip])
def test_inplace_add_on_an_aliased_tensor(cls):
    torch.manual_seed(0)
    model = randomise_bn(cls())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():  # the traced graph itself computes what the model computes
        assert torch.allclose(trace(model)(x), model(x.clone()), atol=1e-6)
    masks = half_masks(model, ["conv0", "conv", "head"])
    small = compact(model, masks, (3, 16, 16))
    support.assert_equivalent(model, small, masks, (2, 3, 16, 16), rtol=1e-5)


def test_inplace_add_read_through_a_view_is_refused():
    model = randomise_bn(InplaceIntoView())
    with pytest.raises(TraceError, match="view `.*` reads later"):
        compact(model, half_masks(model, ["conv0", "conv"]), (3, 16, 16))

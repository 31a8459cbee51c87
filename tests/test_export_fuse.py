"""fuse_for_inference: BN folded into convs and elementwise ops in place, same values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import support
from asfp_explorer.export import ScatterAddInPlace, compact, fuse_for_inference, load_compact, save_compact
from asfp_explorer.models import build_model, prunable_layers
from support import masked_reference


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """The shared trained-like BN values (tests/support.py), in eval mode."""
    return support.randomise_bn(model, seed).eval()


def random_masks(model: nn.Module, ratio: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, conv in prunable_layers(model).items():
        n = conv.out_channels
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[: n - int(n * ratio)]] = True
        masks[name] = mask
    return masks


def check(model, fused, masks, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    kept = x.clone()
    with torch.no_grad():
        want = masked_reference(model, masks)(x)
        got = fused(x)
    assert torch.equal(x, kept), "the input was overwritten"
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()


@pytest.mark.parametrize("name,side", [("resnet20", 32), ("resnet56", 32), ("resnet18", 64), ("resnet50", 64)])
def test_fused_equals_masked_model(name, side):
    model = randomise_bn(build_model(name, 10), seed=len(name))
    masks = random_masks(model, 0.4, seed=3)
    small = compact(model, masks, (3, side, side))
    fused = fuse_for_inference(small)
    kinds = [type(m) for m in fused.modules()]
    assert nn.BatchNorm2d not in kinds  # every BN follows a conv here
    assert ScatterAddInPlace in kinds
    check(model, fused, masks, (3, 3, side, side))
    check(model, fused, masks, (1, 3, side + 7, side - 3))  # folded maps at another size


def test_fused_saves_and_loads(tmp_path):
    model = randomise_bn(build_model("resnet20"))
    masks = random_masks(model, 0.3, seed=0)
    fused = fuse_for_inference(compact(model, masks, (3, 32, 32)))
    save_compact(fused, tmp_path / "f.pt")
    check(model, load_compact(tmp_path / "f.pt"), masks, (2, 3, 32, 32))


def test_fuse_leaves_the_compact_model_alone():
    model = randomise_bn(build_model("resnet20"))
    masks = random_masks(model, 0.4, seed=1)
    small = compact(model, masks, (3, 32, 32))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    fuse_for_inference(small)
    assert before.keys() == small.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    check(model, small, masks, (2, 3, 32, 32))


class SharedStream(nn.Module):
    """A stream read again after the residual add: the add must not overwrite it."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        s = torch.relu(self.bn0(self.conv0(x)))
        y = torch.relu(s + self.bn(self.conv(s)))
        z = torch.cat([y, s], dim=1)  # s read after the add
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(z, 1).flatten(1))


def test_a_stream_read_later_is_not_overwritten():
    torch.manual_seed(0)
    model = randomise_bn(SharedStream())
    masks = {"conv": torch.arange(8) % 3 != 0}
    fused = fuse_for_inference(compact(model, masks, (3, 12, 12)))
    assert not any(isinstance(m, ScatterAddInPlace) for m in fused.modules())
    check(model, fused, masks, (2, 3, 12, 12))

"""Conv MACs (spec §6) against the published table, hand-written formulas and fvcore."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from asfp_explorer.flops import MacCounter, conv_macs, fvcore_conv_macs
from asfp_explorer.models import build_model, prunable_layers

# spec §6.1: dense MACs and reductions (%) at P = 0.1, 0.2, 0.3, 0.4
PAPER = {
    "resnet20": (40_550_400, (15.2, 29.3, 42.2, 54.0)),
    "resnet32": (68_861_952, (14.9, 28.8, 41.5, 53.2)),
    "resnet56": (125_485_056, (14.7, 28.4, 41.1, 52.6)),
}


@pytest.mark.parametrize("name", PAPER)
def test_paper_table_cifar(name):
    dense, reductions = PAPER[name]
    counter = MacCounter(build_model(name), (3, 32, 32))
    assert counter.dense_macs == dense
    got = tuple(round(100 * (1 - counter.paper_macs(p) / dense), 1) for p in (0.1, 0.2, 0.3, 0.4))
    assert got == reductions


def test_paper_resnet110():
    counter = MacCounter(build_model("resnet110"), (3, 32, 32))
    assert round(100 * (1 - counter.paper_macs(0.3) / counter.dense_macs), 1) == 40.8  # spec §9


def _tv_paper_reference(depth: int, keep: float) -> tuple[float, float]:
    """Hand-written paper-convention MACs of torchvision ResNets at 224 px, fractional channels.

    torchvision geometry: the stride of a downsampling bottleneck is on its 3x3 conv, so its
    first 1x1 conv runs at the input resolution. Projection shortcuts are never pruned; the
    residual stream is full width; the stem output (after max pooling) is pruned.
    """
    bottleneck = depth in (50, 101)
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    dense = pruned = 64 * 3 * 49 * 112 * 112
    pruned *= keep
    stream, stream_kept, side = 64, 64 * keep, 56  # after the stem and max pooling
    for stage, n in enumerate(blocks):
        width = 64 * 2 ** stage
        out = width * 4 if bottleneck else width
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            new_side = side // stride
            if bottleneck:
                convs = [(stream, stream_kept, width, 1, side), (width, width * keep, width, 9, new_side),
                         (width, width * keep, out, 1, new_side)]
            else:
                convs = [(stream, stream_kept, width, 9, new_side), (width, width * keep, out, 9, new_side)]
            for cin, cin_kept, cout, taps, s in convs:
                dense += cin * cout * taps * s * s
                pruned += cin_kept * cout * keep * taps * s * s
            if b == 0 and (stride == 2 or stream != out):  # projection shortcut, not pruned
                dense += stream * out * new_side * new_side
                pruned += stream_kept * out * new_side * new_side
            stream, stream_kept, side = out, out, new_side  # after the addition: full width
    return dense, pruned


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_paper_imagenet_matches_hand_formula(depth):
    counter = MacCounter(build_model(f"resnet{depth}", 1000), (3, 224, 224))
    dense, pruned = _tv_paper_reference(depth, 0.7)
    assert counter.dense_macs == dense
    assert counter.paper_macs(0.3) == pytest.approx(pruned, rel=1e-12)


def test_paper_imagenet_published_numbers():
    r18 = MacCounter(build_model("resnet18", 1000), (3, 224, 224))
    r50 = MacCounter(build_model("resnet50", 1000), (3, 224, 224))
    red18 = 100 * (1 - r18.paper_macs(0.3) / r18.dense_macs)
    red50 = 100 * (1 - r50.paper_macs(0.3) / r50.dense_macs)
    assert abs(red18 - 41.8) < 0.5
    # Published 42.2 % (FPGM) counts each downsampling bottleneck's first 1x1 conv at the output
    # resolution (stride on the 1x1, ResNet v1); torchvision strides the 3x3 (v1.5), which
    # gives 41.5 % with the same rule. SFP's own ResNet-50 row says 41.8 %.
    assert abs(red50 - 41.8) < 0.5 and abs(red50 - 42.2) < 0.75
    v1 = build_model("resnet50", 1000)
    for stage in (v1.layer2, v1.layer3, v1.layer4):  # ResNet v1: the stride on the first 1x1
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    r50v1 = MacCounter(v1, (3, 224, 224))
    assert abs(100 * (1 - r50v1.paper_macs(0.3) / r50v1.dense_macs) - 42.2) < 0.5


def test_exact_resnet56_at_04_is_about_half():
    counter = MacCounter(build_model("resnet56"), (3, 32, 32))
    exact = 1 - counter.exact_macs(counter.kept_at(0.4)) / counter.dense_macs
    paper = 1 - counter.paper_macs(0.4) / counter.dense_macs
    assert 0.49 < exact < 0.51 and exact < paper  # spec §6.2: a few points below the paper's


def _cifar_exact_reference(depth: int, kept: dict[str, int]) -> int:
    """Hand-written exact MACs of a CIFAR ResNet: integer channels, full-width stream."""
    n = (depth - 2) // 6
    total = 3 * kept["conv1"] * 9 * 32 * 32
    stream_from = "conv1"  # the first block reads the stem output directly
    cin = 16
    for s, (width, side) in enumerate(((16, 32), (32, 16), (64, 8)), start=1):
        for b in range(n):
            c1, c2 = f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2"
            read = kept[stream_from] if stream_from else cin
            total += read * kept[c1] * 9 * side * side
            total += kept[c1] * kept[c2] * 9 * side * side
            stream_from, cin = None, width  # after the addition the stream is full width
    return total


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet110"])
def test_exact_matches_hand_formula(name):
    model = build_model(name)
    counter = MacCounter(model, (3, 32, 32))
    rng = random.Random(name)
    for _ in range(20):
        kept = {n: rng.randint(1, c.out_channels) for n, c in prunable_layers(model).items()}
        assert counter.exact_macs(kept) == _cifar_exact_reference(int(name[6:]), kept)


def test_exact_of_nothing_pruned_is_dense_and_fvcore():
    for name, size in [("resnet20", 32), ("resnet110", 32), ("resnet18", 224), ("resnet50", 96),
                       ("resnet34", 64), ("resnet101", 64)]:
        model = build_model(name, 10)
        counter = MacCounter(model, (3, size, size))
        full = {n: c.out_channels for n, c in prunable_layers(model).items()}
        assert counter.exact_macs({}) == counter.exact_macs(full) == counter.dense_macs
        assert counter.dense_macs == fvcore_conv_macs(model, (3, size, size)) == conv_macs(model, (3, size, size))
        assert counter.exact_params(full) == counter.dense_params == sum(p.numel() for p in model.parameters())


def test_counter_leaves_the_model_alone():
    model = build_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    MacCounter(model, (3, 32, 32))
    fvcore_conv_macs(model, (3, 32, 32))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_layer_and_bad_ratio():
    counter = MacCounter(build_model("resnet20"), (3, 32, 32))
    with pytest.raises(ValueError, match="kept: unknown layer 'fc'"):
        counter.exact_macs({"fc": 3})
    with pytest.raises(ValueError, match="prune_ratio"):
        counter.paper_macs(1.0)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.a(x)
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return self.b(x).mean((1, 2, 3))

    def prunable_conv_names(self):
        return ["a", "b"]


def test_untraceable_model_counts_output_channels_only():
    counter = MacCounter(Untraceable(), (3, 8, 8))
    assert not counter.traced
    assert counter.dense_macs == (3 * 8 + 8 * 8) * 9 * 64
    assert counter.exact_macs({"a": 4}) == (3 * 4 + 8 * 8) * 9 * 64  # b's input stays full width

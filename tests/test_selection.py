"""Mask selection against slow, obviously correct reference code."""

import math

import numpy as np
import pytest
import torch

from asfp_explorer.pruning.masks import apply_masks, select_mask
from asfp_explorer.schedules import pruned_count


def reference_mask(weight, ratio, criterion="l2"):
    """Sort filters by (score, index) in plain Python; prune the first floor(N P)."""
    w = weight.double().numpy().reshape(weight.shape[0], -1)
    n = w.shape[0]
    if criterion == "l2":
        scores = [math.sqrt(sum(v * v for v in row)) for row in w]
    elif criterion == "l1":
        scores = [sum(abs(v) for v in row) for row in w]
    else:  # fpgm: sum of Euclidean distances to all other filters
        scores = [sum(math.dist(w[i], w[j]) for j in range(n)) for i in range(n)]
    k = min(int(math.floor(n * ratio + 1e-9)), n - 1)
    order = sorted(range(n), key=lambda i: (scores[i], i))
    keep = [True] * n
    for i in order[:k]:
        keep[i] = False
    return keep


@pytest.mark.parametrize("criterion", ["l2", "l1", "fpgm"])
@pytest.mark.parametrize("n", [1, 3, 16, 33, 64])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.4, 0.9, 0.99])
def test_selection_matches_reference(criterion, n, ratio):
    g = torch.Generator().manual_seed(n * 1000 + int(ratio * 100))
    weight = torch.randn(n, 4, 3, 3, generator=g)
    got = select_mask(weight, ratio, criterion).tolist()
    assert got == reference_mask(weight, ratio, criterion)
    assert sum(got) >= 1  # never all filters
    assert n - sum(got) == pruned_count(n, ratio)


def test_ties_break_by_index():
    weight = torch.ones(6, 2, 1, 1)
    assert select_mask(weight, 0.5).tolist() == [False, False, False, True, True, True]


def test_fpgm_mix_reference():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(20, 3, 3, 3, generator=g)
    ratio, share = 0.4, 0.5
    k = pruned_count(20, ratio)
    w = weight.double().numpy().reshape(20, -1)
    norms = np.linalg.norm(w, axis=1)
    by_norm = sorted(range(20), key=lambda i: (norms[i], i))[: round(k * share)]
    rest = [i for i in range(20) if i not in by_norm]
    dist = {i: sum(math.dist(w[i], w[j]) for j in rest) for i in rest}
    by_dist = sorted(rest, key=lambda i: (dist[i], i))[: k - len(by_norm)]
    expected = [i not in by_norm + by_dist for i in range(20)]
    assert select_mask(weight, ratio, "fpgm-mix", share).tolist() == expected


def test_hard_keeps_earlier_pruned_filters_pruned():
    weight = torch.arange(1.0, 11.0).view(10, 1, 1, 1)
    earlier = torch.tensor([False] * 9 + [True])  # the largest filter was pruned before
    kept = select_mask(weight, 0.3, always_pruned=earlier, min_pruned=1)
    assert not kept[9] and (~kept).sum() == 3
    # a lower ratio never revives it
    assert not select_mask(weight, 0.0, always_pruned=earlier, min_pruned=1)[9]


def test_apply_masks_zeroes_weights_and_bias_only():
    conv = torch.nn.Conv2d(2, 4, 3, bias=True)
    bn = torch.nn.BatchNorm2d(4)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    mask = torch.tensor([True, False, True, False])
    apply_masks({"c": conv}, {"c": mask})
    assert conv.weight[~mask].abs().sum() == 0 and conv.bias[~mask].abs().sum() == 0
    assert conv.weight[mask].abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())

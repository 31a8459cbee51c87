"""pruning.width_multiple (beyond the paper): kept widths rounded to multiples, against brute force."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asfp_explorer.config import ConfigError, PruningConfig
from asfp_explorer.pruning.algorithm import FilterPruning
from asfp_explorer.pruning.widths import rounded_pruned_count
from asfp_explorer.schedules import pruned_count


def brute_force(n: int, ratio: float, m: int) -> int:
    """Try every kept width that is a multiple of m in [m, n]; nearest to the paper's kept
    width wins, ties going to the larger width. No multiple fits, or nothing pruned: paper."""
    paper = pruned_count(n, ratio)
    if m == 1 or paper == 0 or n < m:
        return paper
    kept = n - paper
    best = min(range(m, n + 1, m), key=lambda k: (abs(k - kept), -k))
    return n - best


@pytest.mark.parametrize("m", [1, 4, 8, 16])
def test_rounding_rule(m):
    for n in [1, 3, 8, 10, 16, 20, 32, 64, 100, 256]:
        for ratio in [0.0, 0.05, 0.1, 0.25, 0.3, 0.4, 0.5, 0.6, 0.9, 0.99]:
            got = rounded_pruned_count(n, ratio, m)
            assert got == brute_force(n, ratio, m), (n, ratio, m)
            assert 0 <= got < n or n == 1


def test_pruning_keeps_multiples_of_eight():
    torch.manual_seed(0)
    convs = {"a": nn.Conv2d(3, 16, 3), "b": nn.Conv2d(3, 32, 3), "c": nn.Conv2d(3, 64, 3)}
    pruning = FilterPruning(convs, PruningConfig(method="sfp", prune_ratio=0.4, width_multiple=8), 10)
    pruning.update_masks(0)
    assert {n: int(m.sum()) for n, m in pruning.masks.items()} == {"a": 8, "b": 24, "c": 40}
    assert pruning.pruned_counts == {"a": 8, "b": 8, "c": 24}
    paper = FilterPruning(convs, PruningConfig(method="sfp", prune_ratio=0.4), 10)
    paper.update_masks(0)
    assert {n: int(m.sum()) for n, m in paper.masks.items()} == {"a": 10, "b": 20, "c": 39}


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_bad_width_multiple(bad):
    with pytest.raises(ConfigError, match="pruning.width_multiple"):
        PruningConfig(width_multiple=bad)

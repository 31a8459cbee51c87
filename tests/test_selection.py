"""Mask selection against slow, obviously correct reference code."""

import math

import numpy as np
import pytest
import torch

from asfp_explorer.config import PruningConfig
from asfp_explorer.pruning.masks import apply_masks, norm_share_count, select_mask
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


def fpgm_mix_reference(weight, ratio, share):
    """FPGM-mix in plain Python: floor(N P) pruned, floor(that * share) of them the lowest
    ℓ2 norms, the rest the smallest distance sums to the filters left after the norm step.
    Returns (kept mask, pruned by norm, pruned by distance)."""
    n = weight.shape[0]
    k = min(int(math.floor(n * ratio + 1e-9)), n - 1)
    w = weight.double().numpy().reshape(n, -1)
    norms = np.linalg.norm(w, axis=1)
    by_norm = sorted(range(n), key=lambda i: (norms[i], i))[: int(math.floor(k * share + 1e-9))]
    rest = [i for i in range(n) if i not in by_norm]
    dist = {i: sum(math.dist(w[i], w[j]) for j in rest) for i in rest}
    by_dist = sorted(rest, key=lambda i: (dist[i], i))[: k - len(by_norm)]
    return [i not in by_norm + by_dist for i in range(n)], by_norm, by_dist


@pytest.mark.parametrize("n,ratio,share", [(20, 0.4, 0.5), (20, 0.4, 0.25), (16, 0.4, 0.25),
                                           (33, 0.3, 0.0), (33, 0.3, 1.0), (12, 0.5, 0.3)])
def test_fpgm_mix_reference(n, ratio, share):
    g = torch.Generator().manual_seed(3 + n)
    weight = torch.randn(n, 3, 3, 3, generator=g)
    expected, _, _ = fpgm_mix_reference(weight, ratio, share)
    assert select_mask(weight, ratio, "fpgm-mix", share).tolist() == expected


def test_fpgm_mix_default_share_is_the_papers_10_of_40_percent():
    # FPGM paper: 40 % pruned = 30 % by distance + 10 % by norm. N = 64, P = 0.4: 25 pruned,
    # floor(25 * 0.25) = 6 by norm (the paper's int(6.4)) and 19 by distance (int(19.2)).
    assert PruningConfig().fpgm_norm_share == 0.25
    g = torch.Generator().manual_seed(7)
    # filters around a common centre, six of them near the origin instead: the smallest
    # norms, yet far from the geometric median, so only the norm step prunes them
    weight = torch.randn(64, 16, 3, 3, generator=g) + 3 * torch.randn(1, 16, 3, 3, generator=g)
    weight[:6] = 0.01 * torch.randn(6, 16, 3, 3, generator=g)
    expected, by_norm, by_dist = fpgm_mix_reference(weight, 0.4, 0.25)
    assert (len(by_norm), len(by_dist)) == (6, 19) and sorted(by_norm) == list(range(6))
    got = select_mask(weight, 0.4, "fpgm-mix")  # the default share
    assert got.tolist() == expected and int((~got).sum()) == 25
    # plain FPGM keeps those six (they are far from the median): the norm step is what prunes them
    assert select_mask(weight, 0.4, "fpgm")[:6].all()


def test_norm_share_counts():
    table = {(25, 0.25): 6, (12, 0.25): 3, (6, 0.25): 1, (10, 0.3): 3, (9, 0.0): 0, (9, 1.0): 9}
    assert {k: norm_share_count(*k) for k in table} == table


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


def test_norm_share_is_exposed_on_the_command_line_in_yaml_and_in_the_dashboard():
    from asfp_explorer.cli import build_parser
    from asfp_explorer.commands.train import config_from_args
    from asfp_explorer.config import ConfigError, RunConfig
    from asfp_explorer.viz.controls import STEERING, Controls

    args = build_parser().parse_args(["train", "--criterion", "fpgm-mix",
                                      "--fpgm-norm-share", "0.4"])
    assert config_from_args(args).pruning.fpgm_norm_share == 0.4
    with pytest.raises(ConfigError, match="^pruning.fpgm_norm_share"):
        config_from_args(build_parser().parse_args(["train", "--fpgm-norm-share", "1.5"]))
    yaml_config = RunConfig.from_yaml("pruning:\n  fpgm_norm_share: 0.1\n")
    assert yaml_config.pruning.fpgm_norm_share == 0.1
    assert RunConfig.from_yaml(yaml_config.to_yaml()) == yaml_config
    controls = Controls(RunConfig())
    assert controls.value("fpgm_norm_share") == 0.25
    controls.set_value("fpgm_norm_share", 0.5)
    assert controls.config(RunConfig()).pruning.fpgm_norm_share == 0.5
    assert STEERING["fpgm_norm_share"] == ("pruning", "fpgm_norm_share")  # steerable in a run

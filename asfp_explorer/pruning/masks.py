"""Mask selection and application (spec §2, §4).

A mask is a bool vector over a layer's filters, True = kept. Selection is deterministic: the
lowest scores are pruned, ties broken by lower filter index first (a stable sort), so the same
weights always give the same mask.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from ..schedules import pruned_count
from .criteria import distance_sums, lp_norms


def lowest(scores: torch.Tensor, count: int, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """Bool vector marking the `count` lowest scores (ties: lower index first).

    `excluded` filters are never picked (they are ranked last).
    """
    picked = torch.zeros_like(scores, dtype=torch.bool)
    if count <= 0:
        return picked
    s = scores if excluded is None else scores.masked_fill(excluded, float("inf"))
    order = torch.sort(s, stable=True).indices
    picked[order[:count]] = True
    return picked


def select_mask(
    weight: torch.Tensor,
    prune_ratio: float,
    criterion: str = "l2",
    fpgm_norm_share: float = 0.25,
    always_pruned: torch.Tensor | None = None,
    min_pruned: int = 0,
) -> torch.Tensor:
    """Kept-filter mask for one conv weight W[N, C, k, k] at `prune_ratio`.

    floor(N·P) filters are pruned, never all (spec §2). Hard pruning passes `always_pruned`
    (the filters pruned before, ranked first so they stay pruned) and `min_pruned` (their
    count, known on the host) so that a lowered ratio never revives them.
    """
    n = weight.shape[0]
    count = max(pruned_count(n, prune_ratio), min(min_pruned, n - 1))
    if criterion in ("l2", "l1"):
        scores = lp_norms(weight, 2 if criterion == "l2" else 1)
    elif criterion == "fpgm":
        scores = distance_sums(weight)
    elif criterion == "fpgm-mix":
        # FPGM paper, "mix": a norm-ranked share of the pruned filters first, then the rest by
        # their distance sums to the filters that remain.
        by_norm = lowest(lp_norms(weight, 2), norm_share_count(count, fpgm_norm_share))
        w = weight.detach().flatten(1).float()
        dist = torch.cdist(w.unsqueeze(0), w.unsqueeze(0)).squeeze(0)
        sums = (dist * (~by_norm).float().unsqueeze(0)).sum(dim=1)
        scores = sums.masked_fill(by_norm, -float("inf"))
    else:
        raise ValueError(f"criterion: unknown {criterion!r}; allowed: l2, l1, fpgm, fpgm-mix")
    if always_pruned is not None:
        scores = scores.masked_fill(always_pruned, -float("inf"))
    return ~lowest(scores, count)


def norm_share_count(count: int, norm_share: float) -> int:
    """FPGM-mix: how many of a layer's `count` pruned filters are picked by ℓ2 norm.

    floor(count * share), the rest by distance. With the FPGM paper's 40 % = 10 % by norm +
    30 % by distance (share 0.25) this gives its counts, e.g. N = 64: 25 pruned = 6 + 19; the
    authors' code floors the two parts separately from N (int(0.1 N), int(0.3 N)), which can
    prune one filter less in total (N = 16: 1 + 4 = 5, not floor(6.4) = 6; docs/deviations.md).
    """
    # The epsilon keeps a product such as 10 * 0.3 = 2.9999999999999996 from losing a filter,
    # as in schedules.pruned_count.
    return min(count, int(math.floor(count * norm_share + 1e-9)))


@torch.no_grad()
def apply_masks(convs: Mapping[str, nn.Conv2d], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned filters in place (weights and conv bias); BN is never touched (spec §3)."""
    for name, conv in convs.items():
        keep = masks[name].to(conv.weight.dtype)
        conv.weight.mul_(keep.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(keep)

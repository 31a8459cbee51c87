"""Hardware-friendly kept widths: an opt-in extension beyond the paper (`pruning.width_multiple`).

The paper prunes floor(N P) filters per layer (schedules.pruned_count), which leaves widths
such as 10, 19 or 39 that CPU and GPU conv kernels handle worse than multiples of 8. With
`width_multiple = m > 1` each layer's pruned count is rounded so that the kept width is a
multiple of m. The rounding rule, per layer of N filters at ratio P:

- paper count c = floor(N P); kept k = N - c;
- c = 0 (ratio 0, or N P < 1), or N < m: the paper count, unchanged (no multiple fits);
- otherwise the kept width becomes the multiple of m nearest to k (halves round to the larger
  width, i.e. fewer pruned filters), at least m (never every filter pruned) and at most the
  largest multiple of m not above N; the pruned count is N minus that.

Where m divides N the effective ratio differs from P by at most m / (2 N) per layer (e.g. N = 16, P = 0.4:
6 pruned -> 8; N = 32: 12 -> 8; N = 64: 25 -> 24). m = 1 is the paper's count.
"""

from __future__ import annotations

from ..schedules import pruned_count


def rounded_pruned_count(num_filters: int, prune_ratio: float, multiple: int) -> int:
    """Filters to prune so the kept width is a multiple of `multiple` (rule in the module doc)."""
    paper = pruned_count(num_filters, prune_ratio)
    if multiple <= 1 or paper == 0 or num_filters < multiple:
        return paper
    kept = num_filters - paper
    rounded = multiple * ((2 * kept + multiple) // (2 * multiple))  # nearest multiple, halves up
    rounded = min(max(rounded, multiple), multiple * (num_filters // multiple))
    return num_filters - rounded


def layer_ratio(num_filters: int, prune_ratio: float, multiple: int) -> float:
    """The ratio at which the paper's count floor(N r) equals `rounded_pruned_count`: what the
    mask selection is given for this layer (the paper's `prune_ratio` itself when multiple = 1)."""
    if multiple <= 1:
        return prune_ratio
    return rounded_pruned_count(num_filters, prune_ratio, multiple) / num_filters

"""Filter scores (spec §2): a low score means "prune first".

All functions take a conv weight W[N, C, k, k] and return a float tensor of N scores on the
weight's device, with no host synchronisation.
"""

from __future__ import annotations

import torch


def lp_norms(weight: torch.Tensor, p: int = 2) -> torch.Tensor:
    """ℓp norm of each filter W[i] over its C·k·k weights."""
    return torch.linalg.vector_norm(weight.detach().flatten(1).float(), ord=p, dim=1)


def distance_sums(weight: torch.Tensor) -> torch.Tensor:
    """FPGM: sum of Euclidean distances from each filter to all others of the layer.

    The smallest sums are nearest the geometric median, hence the most replaceable.
    """
    w = weight.detach().flatten(1).float()
    return torch.cdist(w.unsqueeze(0), w.unsqueeze(0)).squeeze(0).sum(dim=1)

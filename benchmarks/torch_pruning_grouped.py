"""Torch-Pruning's result for the same masks ("grouped"), for side-by-side benchmarks only.

Torch-Pruning (`pip install torch-pruning`, an optional benchmark dependency that neither the
tests nor the tool need) removes channels group by group: a `DependencyGraph` couples every
conv whose output meets the same residual stream, and a group can only lose a channel all of
its convs lose. For one set of masks this prunes, per group, the channels that *every* coupled
conv in `masks` prunes (a group holding a conv without a mask prunes nothing). It does not fold
the pruned filters' BN constants, so its output is not the masked model's; only its speed is
compared.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn


def available() -> bool:
    """Whether the optional `torch_pruning` package is installed."""
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return False
    return True


def grouped(model: nn.Module, masks: Mapping[str, torch.Tensor], input_size: Sequence[int],
            ignored: Sequence[str] = ()) -> tuple[nn.Module, int]:
    """A copy of `model` physically pruned by Torch-Pruning, and the number of filters removed.

    `masks`: per conv name, bool vector over its filters (True = kept). `ignored`: module names
    Torch-Pruning must leave alone (the classifier is always left alone). Raises whatever
    Torch-Pruning raises (e.g. for models its tracer cannot follow).
    """
    import torch_pruning as tp

    work = copy.deepcopy(model).eval()
    modules = dict(work.named_modules())
    names = {m: n for n, m in modules.items()}
    leave = [m for n, m in modules.items() if isinstance(m, nn.Linear) or n in ignored]
    with torch.enable_grad():  # the graph is traced through autograd
        # `leave` is not passed here: ignoring the classifier while tracing breaks Torch-Pruning
        # 1.6.1's index mapping of the last stage (indices beyond the width); it is ignored below.
        graph = tp.DependencyGraph().build_dependency(work, example_inputs=torch.randn(1, *input_size),
                                                      verbose=False)
    plans = []
    for group in list(graph.get_all_groups(ignored_layers=leave, root_module_types=[nn.Conv2d])):
        pruned_by_all: set[int] | None = None
        for item in group:
            module = item.dep.target.module
            if not (isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(item.dep.handler)):
                continue
            mask = masks.get(names.get(module, ""))
            pruned = set() if mask is None else {r for i, r in zip(item.idxs, item.root_idxs) if not bool(mask[i])}
            pruned_by_all = pruned if pruned_by_all is None else pruned_by_all & pruned
        if pruned_by_all:
            root = group[0].dep.target.module
            plans.append((root, sorted(pruned_by_all)))
    removed = 0
    for root, idxs in plans:  # groups are disjoint, so one group's pruning leaves the others' indices
        g = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs)
        if not graph.check_pruning_group(g):
            continue
        g.prune()
        removed += len(idxs)
    return work.eval(), removed

"""BatchNorm remedies beyond the paper (opt-in, off by default).

- *Adaptive BN* (EagleEye, ECCV 2020): after a mask, the running statistics still describe the
  filters as they were before zeroing, so the masked evaluation normalises with stale numbers.
  `recalibrate` re-estimates them from a few training batches, without gradients.
- *Mask BN with the filter*: a zeroed filter still outputs the constant beta - gamma*mu/sigma
  after BN; zeroing gamma and beta of the channel makes its output exactly zero, the semantics
  Torch-Pruning and NNI assume. `batchnorms_after` finds the BN that reads each conv.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                max_batches: int) -> None:
    """Replace every BN layer's running mean/var by their average over `max_batches` batches.

    Runs forward passes in train mode (batch statistics, as in training) with no gradients;
    the BN momentum is restored afterwards so training continues as configured. The model is
    left in train mode.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns or max_batches < 1:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average: each batch weighs the same
    model.train()
    try:
        for i, (x, _) in enumerate(batches):
            if i >= max_batches:
                break
            model(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum


def batchnorms_after(model: nn.Module, conv_names: Sequence[str],
                     input_size: Sequence[int]) -> dict[str, _BatchNorm]:
    """For each named conv, the BN module that reads its output directly (where there is one).

    Found on the model's fx graph (a meta copy is traced; the model is not run).
    """
    from ..models.tracing import AFFINE, analyse

    flow = analyse(model, input_size, conv_names)
    modules = dict(model.named_modules())
    by_node = {n.name: n for n in flow.gm.graph.nodes}
    wanted = set(conv_names)
    out: dict[str, _BatchNorm] = {}
    for name, op in flow.ops.items():
        node = by_node[name]
        if op.kind != AFFINE or node.op != "call_module" or len(op.inputs) != 1:
            continue
        src = op.inputs[0]
        if src.op == "call_module" and src.target in wanted and src.target not in out:
            bn = modules.get(node.target)
            if isinstance(bn, _BatchNorm):
                out[src.target] = bn
    return out


@torch.no_grad()
def zero_pruned_channels(batchnorms: dict[str, _BatchNorm], masks: dict[str, torch.Tensor]) -> None:
    """Set gamma and beta of pruned channels (mask False) to zero, in place."""
    for name, bn in batchnorms.items():
        keep = masks[name].to(bn.weight.dtype)
        if bn.weight is not None:
            bn.weight.mul_(keep)
        if bn.bias is not None:
            bn.bias.mul_(keep)

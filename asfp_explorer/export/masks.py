"""Masks for export: checked against the traced model, and the masked reference model."""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import fx, nn

from ..models.tracing import conv_nodes


def check_masks(model: nn.Module, gm: fx.GraphModule, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks that prune something, as CPU bool vectors; a one-line ValueError for a mask
    that names no single-use, ungrouped Conv2d, has the wrong shape or keeps no filter."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in conv_nodes(gm):
        calls[n.target] = calls.get(n.target, 0) + 1
    allowed = [n for n, c in calls.items() if c == 1 and modules[n].groups == 1]
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        if name not in allowed:
            raise ValueError(f"masks: {name!r} is not a single-use, ungrouped Conv2d of "
                             f"{type(model).__name__}; allowed: {', '.join(allowed)}")
        mask = torch.as_tensor(mask).detach().to("cpu")
        n = modules[name].out_channels
        if mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            raise ValueError(f"masks: {name!r} is {mask.dtype} of shape {tuple(mask.shape)}; "
                             f"expected a bool vector of its {n} filters (True = kept)")
        if not mask.any():
            raise ValueError(f"masks: {name!r} keeps no filter; at least one must be kept")
        if not mask.all():  # a layer that keeps everything changes nothing
            out[name] = mask
    return out


@torch.no_grad()
def masked_copy(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy in eval mode with the pruned filters (and conv biases) zeroed, BN untouched."""
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    for name, mask in masks.items():
        conv = modules[name]
        keep = torch.as_tensor(mask, device=conv.weight.device).to(conv.weight.dtype)
        conv.weight.mul_(keep.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(keep)
    return out

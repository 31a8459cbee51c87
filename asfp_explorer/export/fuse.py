"""Inference-time fusion of a compact model: fewer passes over memory, same values.

`fuse_for_inference(compact_model)` returns a copy with

- every BatchNorm (eval mode, running statistics) folded into the conv before it, so the BN
  pass disappears and its constants become the conv's bias; a folded-constant map added
  between the two (constants.ConstantInputMap) is scaled with it;
- elementwise ops done in place where nothing reads their input afterwards: the constant-map
  addition (`conv.add_(map)`), ReLU, and the residual scatter (`ScatterAddInPlace`, which adds
  into the stream itself instead of a fresh copy of it).

The profile that motivated it (benchmarks/profile_compact.py, CIFAR ResNet-56, P = 0.4, one
CPU thread): at batch 1 the 55 BN calls took about a quarter of the compact model's time; at
batch 64 BN, ReLU, the scatter's copy of the stream and the map additions together about a
tenth. The result equals the compact model up to float rounding (BN folding reassociates).
It is meant for inference without autograd: in-place ops overwrite tensors a backward pass
would need.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..models.inplace import is_view, overwritten
from .constants import ConstantInputMap, Expand, ScatterAdd


class ScatterAddInPlace(nn.Module):
    """`ScatterAdd` that adds into the stream itself (the stream is read by nothing after it):
    kept channels at their places, the pruned channels' constants at theirs. Returns the stream."""

    def __init__(self, channels: int, kept_count: int, pruned_count: int):
        super().__init__()
        self.channels = channels
        self.kept_count = kept_count
        self.pruned_count = pruned_count
        self.register_buffer("kept", torch.zeros(kept_count, dtype=torch.long))
        self.register_buffer("pruned", torch.zeros(pruned_count, dtype=torch.long))
        self.register_buffer("pruned_values", torch.zeros(1, pruned_count, 1, 1))

    def forward(self, stream: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        stream.index_add_(1, self.kept, x)
        if self.pruned_count > 0:  # only the pruned channels' share of the stream is touched
            n, h, w = stream.shape[0], stream.shape[2], stream.shape[3]
            stream.index_add_(1, self.pruned, self.pruned_values.expand(n, self.pruned_count, h, w))
        return stream

    @classmethod
    def of(cls, add: ScatterAdd) -> "ScatterAddInPlace":
        values = add.values.detach()
        pruned = (values != 0).nonzero().flatten()  # channels whose constant is 0 need nothing
        new = cls(add.channels, add.kept_count, len(pruned))
        new.kept.copy_(add.kept)
        new.pruned.copy_(pruned)
        new.pruned_values = values[pruned].view(1, -1, 1, 1).clone()
        return new.to(values.device)


# Modules and functions whose result is a new tensor that aliases none of their inputs.
_FRESH_MODULES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, ScatterAdd, Expand,
                                               nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_FRESH_FUNCTIONS = frozenset({operator.add, torch.add, operator.sub, operator.mul, torch.cat, F.pad,
                              F.adaptive_avg_pool2d, F.max_pool2d, F.avg_pool2d})
_RELU_FUNCTIONS = frozenset({F.relu, torch.relu})


def _fresh(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`n` holds a tensor of its own (no parameter, buffer, input or view of another)."""
    if n.op == "call_module":
        m = modules[n.target]
        if isinstance(m, ScatterAddInPlace):
            return _fresh(n.args[0], modules)  # the stream itself, fresh if the stream was
        if isinstance(m, nn.ReLU):
            return _fresh(n.args[0], modules) if m.inplace else True
        return isinstance(m, _FRESH_MODULES)
    if n.op == "call_function":
        if n.target in _RELU_FUNCTIONS:
            return _fresh(n.args[0], modules) if n.kwargs.get("inplace") else True
        return n.target in _FRESH_FUNCTIONS and all(isinstance(a, fx.Node) for a in n.args[:2])
    if n.op == "call_method" and n.target == "add_":
        return _fresh(n.args[0], modules)
    return False


def _free_to_overwrite(x: fx.Node, at: fx.Node, order: dict[fx.Node, int], modules: dict[str, nn.Module]) -> bool:
    """Whether node `at` may write into `x`'s tensor: it is fresh and every other reader ran
    before and kept no view or alias of it."""
    if not _fresh(x, modules):
        return False
    for u in x.users:
        if u is at:
            continue
        if order[u] > order[at] or is_view(u, modules) or overwritten(u, modules) is x:
            return False
        if u.op == "call_module" and isinstance(modules[u.target], (ScatterAddInPlace, nn.Identity, nn.Dropout)):
            return False
    return True


# ----------------------------------------------------------------------------- BN folding


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, torch.Tensor]:
    """The conv that computes bn(conv(x)) in eval mode, and the per-channel scale applied."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = conv.weight
    new = nn.utils.skip_init(nn.Conv2d, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                             conv.padding, conv.dilation, conv.groups, True, conv.padding_mode,
                             device=w.device, dtype=w.dtype)
    new.weight.copy_(w * scale.to(w).view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    new.bias.copy_((bias * scale + shift).to(w))
    return new, scale


def _foldable(bn: nn.Module) -> bool:
    return (isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def fold_batchnorms(gm: fx.GraphModule) -> int:
    """Fold every BN whose input is a conv read by nothing else (possibly plus a constant map)
    into that conv, in place on `gm`; returns how many were folded."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not _foldable(modules[node.target]) or calls[node.target] != 1:
            continue
        src = node.args[0]
        fold_map = None
        if isinstance(src, fx.Node) and src.op == "call_function" and src.target is operator.add \
                and len(src.users) == 1:  # conv + ConstantInputMap(x)
            conv_node, map_node = src.args
            if not (isinstance(map_node, fx.Node) and map_node.op == "call_module"
                    and isinstance(modules[map_node.target], ConstantInputMap) and len(map_node.users) == 1):
                continue
            fold_map = modules[map_node.target]
        else:
            conv_node = src
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"
                and isinstance(modules[conv_node.target], nn.Conv2d) and len(conv_node.users) == 1
                and calls[conv_node.target] == 1):
            continue
        new, scale = _fold_into_conv(modules[conv_node.target], modules[node.target])
        parent, _, leaf = conv_node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, new)
        modules[conv_node.target] = new
        if fold_map is not None:  # bn(conv + map) = conv' + scale * map
            with torch.no_grad():
                s = scale.to(fold_map.tap_sums).view(-1, 1, 1)
                fold_map.tap_sums.mul_(s)
                if fold_map.cached_map.dim() == 4:
                    fold_map.cached_map.mul_(s.unsqueeze(0))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)
        folded += 1
    return folded


# ----------------------------------------------------------------------------- in place


def elementwise_in_place(gm: fx.GraphModule) -> int:
    """Turn the constant-map additions, ReLUs and residual scatters into in-place ops where
    nothing reads their input afterwards, in place on `gm`; returns how many changed."""
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is operator.add and len(node.args) == 2:
            x, other = node.args
            if isinstance(other, fx.Node) and other.op == "call_module" \
                    and isinstance(modules[other.target], ConstantInputMap) and isinstance(x, fx.Node) \
                    and _free_to_overwrite(x, node, order, modules):
                node.op, node.target = "call_method", "add_"  # conv output += map
                changed += 1
        elif _is_relu(node, modules) and isinstance(node.args[0], fx.Node) \
                and _free_to_overwrite(node.args[0], node, order, modules):
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(F.relu, (node.args[0],), {"inplace": True})
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            order[new] = order.pop(node)
            changed += 1
        elif node.op == "call_module" and type(modules[node.target]) is ScatterAdd \
                and _free_to_overwrite(node.args[0], node, order, modules):
            new_module = ScatterAddInPlace.of(modules[node.target])
            parent, _, leaf = node.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, new_module)
            modules[node.target] = new_module
            changed += 1
    return changed


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return not node.kwargs.get("inplace") and len(node.args) == 1
    return node.op == "call_module" and type(modules[node.target]) is nn.ReLU and not modules[node.target].inplace


def fuse_for_inference(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of a compact model with BN folded into convs and elementwise ops in place (eval
    mode, for inference without autograd); equal to `module` up to float rounding."""
    if not isinstance(module, fx.GraphModule):
        raise TypeError(f"fuse_for_inference: expected the fx.GraphModule that compact() returns, "
                        f"got {type(module).__name__}")
    gm = copy.deepcopy(module).eval()
    fold_batchnorms(gm)
    elementwise_in_place(gm)
    # no eliminate_dead_code(): an in-place op whose result nobody reads is not dead
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm.eval()

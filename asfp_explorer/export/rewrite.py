"""The rewrite: a model's fx graph without its pruned filters (spec §7).

`compact(model, masks)` follows the channel flow of models/tracing.py (the same analysis that
gives `flops.MacCounter.exact_macs`, so the compact model's conv MACs are the exact count by
construction). Each node is handled by the entry of `HANDLERS` for its op kind, as tracing
classifies it:

- CONV: a pruned conv keeps only its kept filters (weights, bias); a conv reading a packed
  tensor reads only the kept channels, plus the map of the dropped constants (constants.py);
- AFFINE: BN keeps only the entries of the kept channels;
- POINTWISE / SPATIAL: copied as is; the constants go through the op (or stay);
- ADD: a residual addition becomes `ScatterAdd` (kept channels at their places + constants);
- CAT: copied; the channel layouts are laid side by side;
- anything else gets the full width back first (`Expand`): exact, but saves nothing there.

Equivalence holds in eval mode against the *masked* model (masks.masked_copy): pruned filters
(and conv biases) zeroed, BN untouched. The result is in eval mode; it is meant for inference.
"""

from __future__ import annotations

import copy
import operator
from typing import Callable, Mapping, Sequence

import torch
from torch import fx, nn

from ..models.tracing import (
    ADD,
    AFFINE,
    CAT,
    CONV,
    POINTWISE,
    PROBE_BATCH,
    SPATIAL,
    Layout,
    Op,
    TraceError,
    follow,
    guess_input_size,
    meta_copy,
    probe_shapes,
    trace,
)
from .constants import Expand, ScatterAdd, input_fold, through_batchnorm, through_pointwise
from .masks import check_masks


def _kept_indices(layout: Layout, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    parts, offset = [], 0
    for s in layout:
        idx = masks[s.source].nonzero().flatten() if s.source is not None else torch.arange(s.width)
        parts.append(idx + offset)
        offset += s.width
    return torch.cat(parts)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    w = conv.weight.detach()
    if out_idx is not None:
        w = w.index_select(0, out_idx.to(w.device))
    if in_idx is not None:
        w = w.index_select(1, in_idx.to(w.device))
    # skip_init: no random initialisation of weights that are overwritten next (slow for big convs)
    new = nn.utils.skip_init(nn.Conv2d, w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                             conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                             device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if conv.bias is not None:
        b = conv.bias.detach()
        new.bias.data.copy_(b[out_idx.to(b.device)] if out_idx is not None else b)
    return new


def _slice_bn(bn: nn.modules.batchnorm._BatchNorm, idx: torch.Tensor) -> nn.BatchNorm2d:
    floats = [t for t in bn.state_dict().values() if t.is_floating_point()]
    where = {"device": floats[0].device, "dtype": floats[0].dtype} if floats else {}
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats, **where)
    new.load_state_dict({k: v if v.dim() == 0 else v[idx.to(v.device)] for k, v in bn.state_dict().items()})
    return new


class _Rewrite:
    """The state of one rewrite: the new graph, and per packed node its kept channel indices
    (ascending) and the constant of every channel (C,)."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor], size: Sequence[int]):
        self.work = copy.deepcopy(model).eval()
        gm = trace(self.work)
        shadow = trace(meta_copy(model))
        if [n.name for n in shadow.graph.nodes] != [n.name for n in gm.graph.nodes]:
            raise TraceError(f"{type(model).__name__} traces to different graphs on two copies; "
                             "compact needs a deterministic forward")
        self.gm = gm
        self.shapes = probe_shapes(shadow, (PROBE_BATCH, *size))
        self.masks = check_masks(model, gm, masks)
        self.flow = follow(gm, self.shapes, self.masks)
        self.modules = dict(self.work.named_modules())  # the originals, before any replacement
        param = next(self.work.parameters(), None)
        self.dtype = param.dtype if param is not None else torch.float32
        self.device = param.device if param is not None else torch.device("cpu")
        self.g = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.full_of: dict[str, fx.Node] = {}
        self.values: dict[str, torch.Tensor] = {}
        self.kept: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ tools

    def helper(self, kind: str, node: fx.Node, module: nn.Module) -> str:
        """Install a helper module under a fresh name `asfp_<kind>_<node>`; return the name."""
        name = f"asfp_{kind}_{node.name}"
        while hasattr(self.work, name):
            name += "_"
        self.work.add_module(name, module.to(device=self.device, dtype=self.dtype))  # index buffers stay long
        return name

    def packed(self, n: fx.Node) -> bool:
        return n.name in self.flow.layouts

    def zero_kept(self, n: fx.Node) -> torch.Tensor:
        v = self.values[n.name].clone()
        v[self.kept[n.name]] = 0
        return v

    def full(self, n: fx.Node) -> fx.Node:
        """The new node holding `n` at its full width."""
        if not self.packed(n):
            return self.env[n]
        if n.name not in self.full_of:
            module = Expand(len(self.values[n.name]), len(self.kept[n.name])).to(dtype=self.dtype)
            module.kept.copy_(self.kept[n.name])
            module.values.copy_(self.zero_kept(n))
            self.full_of[n.name] = self.g.call_module(self.helper("expand", n, module), (self.env[n],))
        return self.full_of[n.name]

    # ------------------------------------------------------------------ handlers, by op kind

    def conv(self, node: fx.Node, op: Op) -> None:
        conv = self.modules[node.target]
        x = op.inputs[0]
        reads_packed = self.packed(x) and self.flow.conv_inputs.get(node.name) is not None
        in_idx = self.kept[x.name] if reads_packed else None
        out_idx = None
        if node.name in self.flow.layouts:
            out_idx = _kept_indices(self.flow.layouts[node.name], self.masks)
        if in_idx is not None or out_idx is not None:
            _set_module(self.work, node.target, _slice_conv(conv, out_idx, in_idx))
        new = self.g.call_module(node.target, (self.env[x] if reads_packed else self.full(x),))
        if reads_packed:
            fold = input_fold(conv, out_idx, self.zero_kept(x), self.shapes[x.name][2:])
            if fold is not None:
                new = self.g.call_function(operator.add, (new, self.g.call_module(
                    self.helper("fold", node, fold), (self.env[x],))))
        self.env[node] = new
        if out_idx is not None:
            self.kept[node.name] = out_idx
            self.values[node.name] = torch.zeros(conv.out_channels, dtype=self.dtype)  # masked: W = 0, b = 0

    def affine(self, node: fx.Node, op: Op) -> None:
        x = op.inputs[0]
        bn = self.modules[node.target]
        _set_module(self.work, node.target, _slice_bn(bn, self.kept[x.name]))
        self.env[node] = self.g.call_module(node.target, (self.env[x],))
        self.kept[node.name] = self.kept[x.name]
        self.values[node.name] = through_batchnorm(bn, self.values[x.name], self.device)

    def pointwise(self, node: fx.Node, op: Op) -> None:
        x = op.inputs[0]
        self.env[node] = self.g.node_copy(node, lambda n: self.env[n])
        self.kept[node.name] = self.kept[x.name]
        self.values[node.name] = through_pointwise(node, x, self.values[x.name].to(self.device),
                                                   self.modules).cpu()

    def spatial(self, node: fx.Node, op: Op) -> None:
        x = op.inputs[0]
        self.env[node] = self.g.node_copy(node, lambda n: self.env[n])
        self.kept[node.name] = self.kept[x.name]
        self.values[node.name] = self.values[x.name]  # a constant channel stays that constant

    def add(self, node: fx.Node, op: Op) -> None:
        a, b = op.inputs
        if self.packed(a) and self.packed(b):  # restore one (preferably one restored already)
            stream, part = (self.full(a), b) if a.name in self.full_of else (self.full(b), a)
        elif self.packed(a):
            stream, part = self.env[b], a
        else:
            stream, part = self.env[a], b
        v = self.zero_kept(part)
        module = ScatterAdd(len(v), len(self.kept[part.name]), bool((v != 0).any())).to(dtype=self.dtype)
        module.kept.copy_(self.kept[part.name])
        module.values.copy_(v)
        self.env[node] = self.g.call_module(self.helper("add", node, module), (stream, self.env[part]))

    def cat(self, node: fx.Node, op: Op) -> None:
        self.env[node] = self.g.node_copy(node, lambda n: self.env[n])
        self.kept[node.name] = _kept_indices(self.flow.layouts[node.name], self.masks)
        self.values[node.name] = torch.cat([
            self.values[i.name] if self.packed(i) else torch.zeros(self.shapes[i.name][1], dtype=self.dtype)
            for i in op.inputs])

    def full_width(self, node: fx.Node, op: Op) -> None:
        """SOURCE, OTHER, OUTPUT, and any op without packed inputs: full width in, copied."""
        self.env[node] = self.g.node_copy(node, self.full)

    # ------------------------------------------------------------------ driver

    def run(self) -> fx.GraphModule:
        for node in self.gm.graph.nodes:
            op = self.flow.ops[node.name]
            handler = HANDLERS.get(op.kind, _Rewrite.full_width)
            if op.kind != CONV and not any(self.packed(i) for i in op.inputs):
                handler = _Rewrite.full_width  # nothing packed comes in: nothing to rewrite
            handler(self, node, op)
        for n in self.g.nodes:
            # Annotations from `from __future__ import annotations` models are strings fx renders
            # as unknown names; TorchScript reads an unannotated argument as a Tensor anyway.
            n.type = None
        self.g.lint()
        return fx.GraphModule(self.work, self.g).eval()


# What each op kind (models/tracing.py) becomes in the compact graph; any other kind: full width.
HANDLERS: dict[str, Callable[[_Rewrite, fx.Node, Op], None]] = {
    CONV: _Rewrite.conv,
    AFFINE: _Rewrite.affine,
    POINTWISE: _Rewrite.pointwise,
    SPATIAL: _Rewrite.spatial,
    ADD: _Rewrite.add,
    CAT: _Rewrite.cat,
}


@torch.no_grad()
def compact(model: nn.Module, masks: Mapping[str, torch.Tensor],
            input_size: Sequence[int] | None = None) -> fx.GraphModule:
    """A physically smaller copy of `model` without the filters that `masks` prune.

    `masks`: per conv name, a bool vector over its filters (True = kept). `input_size` (C, H, W)
    is only used for one shape probe on the meta device (default: (C of the first conv, 32, 32));
    the result works at any input size the model does. The model is not changed. In eval mode
    the result equals the masked model (pruned filters zeroed, BN untouched) up to float
    rounding. Raises TraceError if torch.fx cannot trace the model.
    """
    size = tuple(input_size) if input_size is not None else guess_input_size(model)
    return _Rewrite(model, masks, size).run()

"""The compact model: pruned filters physically removed, exactly equivalent in eval mode (spec §7).

`compact(model, masks)` rewrites the model's torch.fx graph, following the channel flow of
models/tracing.py (the same analysis that gives `flops.MacCounter.exact_macs`, so the compact
model's conv MACs are the exact count by construction):

- a pruned conv keeps only its kept filters (weights, bias), its BN only their entries;
- the next conv reads only the kept channels. What the masked model's pruned channels still
  carried is not zero: after BN a zeroed filter is the constant beta - gamma mu / sqrt(var + eps)
  (then ReLU...), and a constant channel read by a zero-padded conv gives a position-dependent
  map (border taps fall on padding). `ConstantInputMap` adds that map back, computed from the
  kernel taps that fall inside the image, so it is exact for any input size;
- where a pruned conv feeds a residual addition, `ScatterAdd` adds its kept channels into the
  full-width stream at their places, plus the constants of the pruned ones;
- anything the flow analysis does not understand gets the full width back first (`Expand`),
  which is exact but saves nothing there.

Equivalence holds in eval mode against the *masked* model: pruned filters (and conv biases)
zeroed, BN untouched. The compact model is returned in eval mode; it is meant for inference.

Also here: `save_compact` / `load_compact` (state_dict plus a JSON-able description of the
graph, rebuilt without the original model class), `benchmark` (latency, throughput) and
`export_compact`, which does all of it for the CLI.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import json
import operator
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, List, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from .models.tracing import (ADD, AFFINE, CAT, CONV, POINTWISE, SPATIAL, Layout, TraceError, conv_nodes,
                             follow, guess_input_size, meta_copy, probe_shapes, trace)

FORMAT = "asfp-explorer/compact-v1"


# ----------------------------------------------------------------------------- helper modules


class Expand(nn.Module):
    """A packed tensor back to full width: kept channels at their places, every pruned channel
    filled with its constant."""

    def __init__(self, channels: int, kept_count: int):
        super().__init__()
        self.channels = channels
        self.kept_count = kept_count
        self.register_buffer("kept", torch.zeros(kept_count, dtype=torch.long))
        self.register_buffer("values", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        # clone: a fresh tensor even when the expand is a no-op view of the buffer
        full = self.values.view(1, -1, 1, 1).expand(n, self.channels, h, w).clone(
            memory_format=torch.contiguous_format)
        return full.index_copy_(1, self.kept, x)


class ScatterAdd(nn.Module):
    """stream + (packed tensor at full width): the kept channels are added at their places and
    the pruned channels' constants everywhere else. The stream stays full width."""

    def __init__(self, channels: int, kept_count: int, has_values: bool):
        super().__init__()
        self.channels = channels
        self.kept_count = kept_count
        self.has_values = has_values
        self.register_buffer("kept", torch.zeros(kept_count, dtype=torch.long))
        self.register_buffer("values", torch.zeros(channels))  # 0 at kept channels

    def forward(self, stream: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.has_values:
            out = stream + self.values.view(1, -1, 1, 1)
        else:
            out = stream.clone()
        return out.index_add_(1, self.kept, x)


class ConstantInputMap(nn.Module):
    """What a zero-padded conv reads from input channels that were dropped as constants.

    `tap_sums[o, i, j]` = sum over the dropped channels c of value_c W[o, c, i, j]. At output
    position (y, x) only the taps that fall inside the image count, and the kernel window is
    separable, so the map is rows(H) @ tap_sums @ cols(W)^T with 0/1 "tap inside" matrices:
    exact for every input size, and out x H x W x k cheap (no conv, so no conv MACs).
    """

    def __init__(self, out_channels: int, kernel_size: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], cached_size: Sequence[int] = (0, 0)):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size: List[int] = [int(k) for k in kernel_size]
        self.stride: List[int] = [int(s) for s in stride]
        self.padding: List[int] = [int(p) for p in padding]
        self.dilation: List[int] = [int(d) for d in dilation]
        self.register_buffer("tap_sums", torch.zeros(out_channels, self.kernel_size[0], self.kernel_size[1]))
        # The map for one input size (H, W), kept: recomputing it costs ~10 small ops per conv
        # per forward, which on small inputs is a sizeable share of the compact model's time.
        self.cached_size: List[int] = [int(s) for s in cached_size]
        h, w = self.cached_size
        shape = (1, out_channels, self._out(h, 0), self._out(w, 1)) if h and w else (0,)
        self.register_buffer("cached_map", torch.zeros(shape))

    def _out(self, size: int, dim: int) -> int:
        k, s, p, d = self.kernel_size[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    def _inside(self, size: int, dim: int) -> torch.Tensor:
        k, s, p, d = self.kernel_size[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        device = self.tap_sums.device
        pos = (torch.arange(self._out(size, dim), device=device) * s - p).unsqueeze(1) + (torch.arange(k, device=device) * d).unsqueeze(0)
        return ((pos >= 0) & (pos < size)).to(self.tap_sums.dtype)

    def _map(self, h: int, w: int) -> torch.Tensor:
        rows = self._inside(h, 0)  # (H_out, k_h)
        cols = self._inside(w, 1)  # (W_out, k_w)
        return torch.matmul(torch.matmul(rows, self.tap_sums), cols.t()).unsqueeze(0)

    def cache(self, h: int, w: int) -> None:
        """Keep the map for inputs of height `h` and width `w` (call once `tap_sums` is set)."""
        self.cached_size = [int(h), int(w)]
        self.cached_map = self._map(int(h), int(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == self.cached_size[0] and x.shape[3] == self.cached_size[1]:
            return self.cached_map
        return self._map(x.shape[2], x.shape[3])


HELPERS = {c.__name__: c for c in (Expand, ScatterAdd, ConstantInputMap)}


# ----------------------------------------------------------------------------- masks


def _check_masks(model: nn.Module, gm: fx.GraphModule, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


# ----------------------------------------------------------------------------- compact


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


def _substitute(args: Any, node: fx.Node, value: torch.Tensor) -> Any:
    return fx.node.map_arg(args, lambda n: value if n is node else n)


def _through(node: fx.Node, op_input: fx.Node, values: torch.Tensor, modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """The constants after a pointwise node: run the node's own op on them, shaped (1, C, 1, 1)."""
    v = values.view(1, -1, 1, 1).clone()
    if node.op == "call_module":
        out = modules[node.target](v)
    elif node.op == "call_function":
        out = node.target(*_substitute(node.args, op_input, v), **_substitute(node.kwargs, op_input, v))
    else:  # call_method: args[0] is the tensor itself
        args = _substitute(node.args, op_input, v)
        out = getattr(args[0], node.target)(*args[1:], **_substitute(node.kwargs, op_input, v))
    return out.reshape(-1).to(values.dtype)


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
    work = copy.deepcopy(model).eval()
    gm = trace(work)
    shadow = trace(meta_copy(model))
    if [n.name for n in shadow.graph.nodes] != [n.name for n in gm.graph.nodes]:
        raise TraceError(f"{type(model).__name__} traces to different graphs on two copies; "
                         "compact needs a deterministic forward")
    shapes = probe_shapes(shadow, (1, *size))
    masks = _check_masks(model, gm, masks)
    flow = follow(gm, shapes, masks)
    modules = dict(work.named_modules())  # the originals, before any replacement
    param = next(work.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")

    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    full_of: dict[str, fx.Node] = {}
    values: dict[str, torch.Tensor] = {}  # per packed node: constant of every channel (C,)
    kept: dict[str, torch.Tensor] = {}  # per packed node: kept channel indices, ascending

    def helper(kind: str, node: fx.Node, module: nn.Module) -> str:
        name = f"asfp_{kind}_{node.name}"
        while hasattr(work, name):
            name += "_"
        work.add_module(name, module.to(device=device, dtype=dtype))  # index buffers stay long
        return name

    def packed(n: fx.Node) -> bool:
        return n.name in flow.layouts

    def zero_kept(n: fx.Node) -> torch.Tensor:
        v = values[n.name].clone()
        v[kept[n.name]] = 0
        return v

    def full(n: fx.Node) -> fx.Node:
        """The new node holding `n` at its full width."""
        if not packed(n):
            return env[n]
        if n.name not in full_of:
            module = Expand(len(values[n.name]), len(kept[n.name])).to(dtype=dtype)
            module.kept.copy_(kept[n.name])
            module.values.copy_(zero_kept(n))
            full_of[n.name] = g.call_module(helper("expand", n, module), (env[n],))
        return full_of[n.name]

    for node in gm.graph.nodes:
        op = flow.ops[node.name]
        ins = [i for i in op.inputs if packed(i)]
        if op.kind == CONV:
            conv = modules[node.target]
            x = op.inputs[0]
            reads_packed = packed(x) and flow.conv_inputs.get(node.name) is not None
            in_idx = kept[x.name] if reads_packed else None
            out_idx = kept_out = None
            if node.name in flow.layouts:
                out_idx = kept_out = _kept_indices(flow.layouts[node.name], masks)
            if in_idx is not None or out_idx is not None:
                _set_module(work, node.target, _slice_conv(conv, out_idx, in_idx))
            new = g.call_module(node.target, (env[x] if reads_packed else full(x),))
            if reads_packed:
                consts = zero_kept(x)  # the dropped channels' constants, 0 at kept ones
                if bool((consts != 0).any()):
                    w = conv.weight.detach()
                    if out_idx is not None:
                        w = w.index_select(0, out_idx.to(w.device))
                    taps = torch.einsum("ocij,c->oij", w, consts.to(w))
                    padding = (0, 0) if isinstance(conv.padding, str) else conv.padding  # "valid"
                    fold = ConstantInputMap(w.shape[0], conv.kernel_size, conv.stride, padding, conv.dilation)
                    fold.tap_sums = taps.clone()
                    fold.cache(*shapes[x.name][2:])
                    new = g.call_function(operator.add, (new, g.call_module(helper("fold", node, fold), (env[x],))))
            env[node] = new
            if kept_out is not None:
                kept[node.name] = kept_out
                values[node.name] = torch.zeros(conv.out_channels, dtype=dtype)  # masked: W = 0, b = 0
        elif op.kind == AFFINE and ins:
            x = op.inputs[0]
            bn = modules[node.target]
            _set_module(work, node.target, _slice_bn(bn, kept[x.name]))
            env[node] = g.call_module(node.target, (env[x],))
            kept[node.name] = kept[x.name]
            # what the masked model's BN (eval mode) makes of each channel's constant, by that BN
            values[node.name] = bn(values[x.name].view(1, -1, 1, 1).to(device)).reshape(-1).cpu()
        elif op.kind in (POINTWISE, SPATIAL) and ins:
            x = op.inputs[0]
            env[node] = g.node_copy(node, lambda n: env[n])
            kept[node.name] = kept[x.name]
            values[node.name] = (_through(node, x, values[x.name].to(device), modules).cpu()
                                 if op.kind == POINTWISE else values[x.name])
        elif op.kind == ADD and ins:
            a, b = op.inputs
            if packed(a) and packed(b):  # restore one (preferably one restored already)
                stream, part = (full(a), b) if a.name in full_of else (full(b), a)
            elif packed(a):
                stream, part = env[b], a
            else:
                stream, part = env[a], b
            v = zero_kept(part)
            module = ScatterAdd(len(v), len(kept[part.name]), bool((v != 0).any())).to(dtype=dtype)
            module.kept.copy_(kept[part.name])
            module.values.copy_(v)
            env[node] = g.call_module(helper("add", node, module), (stream, env[part]))
        elif op.kind == CAT and ins:
            env[node] = g.node_copy(node, lambda n: env[n])
            kept[node.name] = _kept_indices(flow.layouts[node.name], masks)
            values[node.name] = torch.cat([values[i.name] if packed(i) else torch.zeros(shapes[i.name][1], dtype=dtype)
                                           for i in op.inputs])
        else:  # SOURCE, OTHER, OUTPUT, and ops without packed inputs: full width in
            env[node] = g.node_copy(node, full)
    for n in g.nodes:
        # Annotations from `from __future__ import annotations` models are strings fx renders
        # as unknown names; TorchScript reads an unannotated argument as a Tensor anyway.
        n.type = None
    g.lint()
    out = fx.GraphModule(work, g)
    return out.eval()


# ----------------------------------------------------------------------------- save and load

_FUNCTION_NAMESPACES = (("operator", operator), ("torch.nn.functional", F), ("torch", torch))
# torch.* functions a saved graph may call: numeric only (never torch.save, torch.load, ...).
_TORCH_FUNCTIONS = frozenset({
    "flatten", "cat", "stack", "add", "sub", "mul", "div", "relu", "relu_", "sigmoid", "tanh",
    "clamp", "clip", "reshape", "squeeze", "unsqueeze", "mean", "sum", "amax", "amin", "max", "min",
    "softmax", "log_softmax", "matmul", "transpose", "permute", "chunk", "split", "narrow",
    "index_select", "index_add", "index_copy", "where", "abs", "exp", "log", "sqrt", "pow",
    "adaptive_avg_pool2d", "max_pool2d", "avg_pool2d", "conv2d", "batch_norm", "neg", "square",
})
_BUILTINS = frozenset({"getattr"})


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    for prefix, ns in _FUNCTION_NAMESPACES:
        if name and getattr(ns, name, None) is fn and (prefix != "torch" or name in _TORCH_FUNCTIONS):
            return f"{prefix}.{name}"
    if name in _BUILTINS and getattr(builtins, name) is fn:
        return f"builtins.{name}"
    raise ValueError(f"save_compact: function {fn!r} cannot be saved; allowed: operator.*, "
                     f"torch.nn.functional.*, torch.{{{', '.join(sorted(_TORCH_FUNCTIONS))}}}, getattr")


def _resolve_function(text: str) -> Any:
    prefix, _, name = text.rpartition(".")
    for p, ns in _FUNCTION_NAMESPACES:
        if p == prefix and (p != "torch" or name in _TORCH_FUNCTIONS) and hasattr(ns, name) \
                and not name.startswith("_"):
            return getattr(ns, name)
    if prefix == "builtins" and name in _BUILTINS:
        return getattr(builtins, name)
    raise ValueError(f"load_compact: function {text!r} is not allowed; allowed: operator.*, "
                     "torch.nn.functional.*, listed torch functions, getattr")


def _encode(a: Any) -> Any:
    if isinstance(a, fx.Node):
        return {"node": a.name}
    if isinstance(a, tuple):
        return {"tuple": [_encode(x) for x in a]}
    if isinstance(a, list):
        return [_encode(x) for x in a]
    if isinstance(a, dict):
        return {"dict": {str(k): _encode(v) for k, v in a.items()}}
    if isinstance(a, slice):
        return {"slice": [_encode(a.start), _encode(a.stop), _encode(a.step)]}
    if a is Ellipsis:
        return {"ellipsis": True}
    if isinstance(a, torch.dtype):
        return {"dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.memory_format):
        return {"memory_format": str(a).removeprefix("torch.")}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise ValueError(f"save_compact: argument {a!r} of type {type(a).__name__} cannot be saved; "
                     "allowed: nodes, numbers, strings, None, tuples, lists, slices, dtypes")


def _decode(a: Any, env: Mapping[str, fx.Node]) -> Any:
    if isinstance(a, list):
        return [_decode(x, env) for x in a]
    if not isinstance(a, dict):
        return a
    (key, value), = a.items()
    if key == "node":
        return env[value]
    if key == "tuple":
        return tuple(_decode(x, env) for x in value)
    if key == "dict":
        return {k: _decode(v, env) for k, v in value.items()}
    if key == "slice":
        return slice(*(_decode(x, env) for x in value))
    if key == "ellipsis":
        return Ellipsis
    if key == "dtype":
        return getattr(torch, value)
    if key == "memory_format":
        return getattr(torch, value)
    raise ValueError(f"load_compact: unknown argument encoding {key!r}")


def _module_type(m: nn.Module) -> str:
    cls = type(m)
    if HELPERS.get(cls.__name__) is cls:
        return f"asfp_explorer.export.{cls.__name__}"
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    raise ValueError(f"save_compact: module type {cls.__module__}.{cls.__name__} cannot be saved; "
                     "allowed: torch.nn modules and the exporter's helpers")


def _module_class(text: str) -> type[nn.Module]:
    prefix, _, name = text.rpartition(".")
    if prefix == "torch.nn" and isinstance(getattr(nn, name, None), type) and issubclass(getattr(nn, name), nn.Module):
        return getattr(nn, name)
    if prefix == "asfp_explorer.export" and name in HELPERS:
        return HELPERS[name]
    raise ValueError(f"load_compact: module type {text!r} is not allowed; allowed: torch.nn.* and "
                     f"asfp_explorer.export.{{{', '.join(HELPERS)}}}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def _constructor_args(m: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a torch.nn module, read back from its same-named attributes."""
    args: dict[str, Any] = {}
    for p in list(inspect.signature(type(m).__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if not hasattr(m, p.name):
            if p.default is p.empty:
                raise ValueError(f"save_compact: cannot read constructor argument {p.name!r} of "
                                 f"{type(m).__name__}; allowed: modules that store their arguments")
            continue
        v = getattr(m, p.name)
        if isinstance(v, torch.Tensor) or (v is None and isinstance(p.default, bool)):
            v = v is not None  # e.g. Conv2d / Linear `bias`: the parameter, or None
        args[p.name] = _jsonable(v)
    return args


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def architecture(module: fx.GraphModule) -> dict[str, Any]:
    """A JSON-able description of a compact model: graph, module constructors, tensor shapes."""
    if not isinstance(module, fx.GraphModule):
        raise TypeError(f"save_compact: expected the fx.GraphModule that compact() returns, got {type(module).__name__}")
    modules = dict(module.named_modules())
    nodes, used, attrs = [], {}, {}
    for n in module.graph.nodes:
        if n.op == "call_module":
            used[n.target] = {"type": _module_type(modules[n.target]), "args": _constructor_args(modules[n.target])}
            target: Any = n.target
        elif n.op == "call_function":
            target = _function_name(n.target)
        elif n.op == "get_attr":
            t = module.get_parameter(n.target) if n.target in dict(module.named_parameters()) else module.get_buffer(n.target)
            attrs[n.target] = {"kind": "parameter" if isinstance(t, nn.Parameter) else "buffer",
                               "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            target = n.target
        else:
            target = n.target
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _encode(n.args), "kwargs": _encode(dict(n.kwargs))})
    widths = {name: [m.in_channels, m.out_channels] for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    param = next(module.parameters(), None)
    return {"format": FORMAT, "dtype": str(param.dtype if param is not None else torch.float32).removeprefix("torch."),
            "widths": widths, "modules": used, "attributes": attrs, "graph": nodes}


def rebuild(arch: Mapping[str, Any]) -> fx.GraphModule:
    """The compact model (random-free, zero-filled) described by `architecture()`; load weights next."""
    if arch.get("format") != FORMAT:
        raise ValueError(f"load_compact: format {arch.get('format')!r} is not supported; allowed: {FORMAT}")
    root = nn.Module()

    def install(name: str, value: Any) -> None:
        parent = root
        *path, leaf = name.split(".")
        for p in path:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        if isinstance(value, nn.Parameter):
            parent.register_parameter(leaf, value)
        elif isinstance(value, torch.Tensor):
            parent.register_buffer(leaf, value)
        else:
            parent.add_module(leaf, value)

    for name, spec in arch["modules"].items():
        cls = _module_class(spec["type"])
        install(name, cls(**{k: _tuples(v) for k, v in spec["args"].items()}))
    for name, spec in arch["attributes"].items():
        t = torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"]))
        install(name, nn.Parameter(t) if spec["kind"] == "parameter" else t)
    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    for e in arch["graph"]:
        op = e["op"]
        if op not in ("placeholder", "get_attr", "call_module", "call_function", "call_method", "output"):
            raise ValueError(f"load_compact: node op {op!r} is not allowed")
        target = _resolve_function(e["target"]) if op == "call_function" else e["target"]
        if op == "call_method" and (target.startswith("_") or not hasattr(torch.Tensor, target)):
            raise ValueError(f"load_compact: method {target!r} is not a public torch.Tensor method")
        args = _decode(e["args"], env)
        node = g.create_node(op, target, args, _decode(e["kwargs"], env), name=e["name"])
        env[e["name"]] = node
    gm = fx.GraphModule(root, g)
    return gm.to(getattr(torch, arch["dtype"])).eval()


def save_compact(module: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write `{format, architecture, state_dict}` to `path` (torch.save; loadable with
    `torch.load(weights_only=True)`), atomically."""
    payload = {"format": FORMAT, "architecture": architecture(module),
               "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_compact(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> fx.GraphModule:
    """The compact model saved by `save_compact`, in eval mode; needs neither the original model
    nor its class, and unpickles nothing but tensors and plain data (weights_only=True)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"load_compact: {path} is not a compact model file; expected format {FORMAT}")
    module = rebuild(payload["architecture"])
    module.load_state_dict(payload["state_dict"], strict=True)
    return module.to(map_location).eval()


# ----------------------------------------------------------------------------- benchmark


def _time_ms(model: nn.Module, x: torch.Tensor, cuda: bool) -> float:
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        end.synchronize()  # sync: the measured interval must have finished on the device
        return start.elapsed_time(end)
    t = time.perf_counter()
    model(x)
    return (time.perf_counter() - t) * 1e3


@torch.inference_mode()
def benchmark(dense: nn.Module, compact: nn.Module, input_size: Sequence[int],
              batch_sizes: Sequence[int] = (1, 64, 256), device: str | torch.device = "cpu",
              repeats: int | None = None, warmup: int | None = None,
              budget_s: float = 2.0) -> dict[str, Any]:
    """Forward latency (ms, median of repeats) and throughput (images/s) of both models.

    Dense and compact runs alternate so that drifts (clocks, caches, other processes) hit both
    alike. `repeats=None` picks, per batch size, as many as fit in about `budget_s` seconds
    (at least 3, at most 50), so small cases get robust medians and big ones stay affordable.
    Warm-up: `warmup` rounds (default CPU 1, CUDA 10); CUDA times come from CUDA events.
    Also returns the conv MACs of both (batch 1) and the theoretical reduction. The models are
    not changed (copies are moved to `device`).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    warmup = warmup if warmup is not None else (10 if cuda else 1)
    from .flops import conv_macs

    models = {"dense": copy.deepcopy(dense).eval().to(device), "compact": copy.deepcopy(compact).eval().to(device)}
    macs = {k: conv_macs(m, input_size) for k, m in models.items()}
    rows = []
    for b in batch_sizes:
        x = torch.randn((b, *input_size), device=device)
        for _ in range(warmup):
            for m in models.values():
                m(x)
        n = repeats
        if n is None:  # one more (warm) round sizes the repeats
            probe = sum(_time_ms(m, x, cuda) for m in models.values())
            n = max(3, min(50, int(budget_s * 1e3 / probe)))
        times: dict[str, list[float]] = {k: [] for k in models}
        for r in range(n):
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            for k in order:
                times[k].append(_time_ms(models[k], x, cuda))
        d, c = statistics.median(times["dense"]), statistics.median(times["compact"])
        rows.append({"batch_size": int(b), "repeats": n, "dense_ms": d, "compact_ms": c,
                     "dense_images_per_s": b / d * 1e3, "compact_images_per_s": b / c * 1e3,
                     "speedup": d / c, "time_reduction_percent": 100.0 * (1.0 - c / d)})
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "input_size": list(input_size), "warmup": warmup,
            "dense_macs": macs["dense"], "compact_macs": macs["compact"],
            "mac_reduction_percent": 100.0 * (1.0 - macs["compact"] / macs["dense"]),
            "batches": rows}


# ----------------------------------------------------------------------------- one call for the CLI


def export_compact(model: nn.Module, masks: Mapping[str, torch.Tensor], input_size: Sequence[int],
                   out_dir: str | os.PathLike, run_benchmark: bool = False,
                   device: str | torch.device = "cpu", batch_sizes: Sequence[int] = (1, 64, 256)) -> dict[str, Any]:
    """Compact `model`, check it against the masked model, save it, optionally benchmark it.

    Writes `out_dir/compact.pt` (see `save_compact`) and `out_dir/export.json` (the returned
    summary: kept filters, MACs, parameters, equivalence error, benchmark). JSON-able.
    """
    from .flops import conv_macs

    out = Path(out_dir)
    small = compact(model, masks, input_size)
    reference = masked_copy(model, masks)
    param = next(reference.parameters())
    x = torch.randn((2, *input_size), device=param.device, dtype=param.dtype)
    with torch.no_grad():
        want, got = reference(x), small(x)
    error = float((want - got).abs().max())
    scale = float(want.abs().max())
    save_compact(small, out / "compact.pt")
    dense_macs, compact_macs = conv_macs(model, input_size), conv_macs(small, input_size)
    summary: dict[str, Any] = {
        "format": FORMAT, "file": "compact.pt", "input_size": list(input_size),
        "kept": {n: int(torch.as_tensor(m).sum()) for n, m in masks.items()},
        "filters": {n: int(torch.as_tensor(m).numel()) for n, m in masks.items()},
        "unit": "MACs (conv multiply-accumulates, batch 1)",
        "dense_macs": dense_macs, "compact_macs": compact_macs,
        "mac_reduction_percent": 100.0 * (1.0 - compact_macs / dense_macs),
        "dense_params": int(sum(p.numel() for p in model.parameters())),
        "compact_params": int(sum(p.numel() for p in small.parameters())),
        "max_abs_error": error, "relative_error": error / scale if scale else error,
        "widths": architecture(small)["widths"],
    }
    if run_benchmark:
        summary["benchmark"] = benchmark(model, small, input_size, batch_sizes, device)
    fd, tmp = tempfile.mkstemp(dir=out, prefix="export.json", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, out / "export.json")
    return summary

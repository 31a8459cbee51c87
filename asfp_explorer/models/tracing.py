"""Channel flow through a torch.fx graph: which convs can be pruned, and what pruning changes.

One analysis serves three clients, so they can never disagree:
- `find_prunable_layers` (a user's own CNN without `prunable_conv_names()`),
- `flops.MacCounter` (exact and paper-convention MACs from kept-filter counts),
- `export.compact` (the physically smaller model).

The model is traced by torch.fx (`trace`: a tracer whose process-wide patches reach only its
own thread, so training and user code on other threads never see a trace); one shape probe
runs it on the meta device (no arithmetic, no data copied, BN statistics untouched), once per
architecture (`probe_shapes` keeps its answers). A pruned conv's output is followed
forward as a *packed* tensor: only kept channels are computed; each pruned channel is a known
per-channel constant (0 out of the conv, then whatever BN and activations make of it).
A packed tensor passes unchanged in kind through

- per-channel affine maps (BatchNorm) and elementwise functions (ReLU & co., scalar arithmetic),
- spatial ops that keep a constant channel constant (max pooling, adaptive pooling, unpadded
  average pooling, interpolation, spatial slicing),
- concatenation along channels (channel segments are laid side by side),

and ends at
- a conv (groups 1, zero or no padding): its input channels shrink; the constants it would have
  read are folded into an additive, position-dependent map;
- a residual addition of two same-shape tensors: the kept channels are scattered back into the
  full-width stream and the constants added, so the stream stays full width (spec §6.2).

Anything else (flatten, view, linear, grouped convs, broadcasting, unknown functions, the model
output) would need the pruned channels back. The exporter then restores the full width first,
which is always exact but saves nothing; `find_prunable_layers` reports such a conv as skipped.
"""

from __future__ import annotations

import copy
import operator
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from .inplace import InplaceAwareProxy, resolve_inplace

# Kinds of graph nodes, as seen by a packed tensor flowing into them.
CONV = "conv"  # nn.Conv2d call
AFFINE = "affine"  # BatchNorm: per-channel parameters to slice
POINTWISE = "pointwise"  # elementwise, no parameters: constants go through the op itself
SPATIAL = "spatial"  # channel-wise, keeps a constant channel constant: constants unchanged
ADD = "add"  # residual addition of two same-shape tensors
CAT = "cat"  # concatenation along channels
OTHER = "other"  # anything else: needs the full width back
OUTPUT = "output"
SOURCE = "source"  # placeholder, get_attr

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
)
POINTWISE_FUNCTIONS: frozenset = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.softplus, torch.clamp, torch.clip, F.dropout, F.dropout2d,
})
POINTWISE_METHODS = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
    "clamp_max", "contiguous", "clone",
})
SCALAR_FUNCTIONS = frozenset({
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
})
SCALAR_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"})
ADD_FUNCTIONS = frozenset({operator.add, operator.iadd, torch.add})
ADD_METHODS = frozenset({"add", "add_"})
SPATIAL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
)
SPATIAL_FUNCTIONS = frozenset({
    F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate, F.avg_pool2d,
    operator.getitem,
})
RESHAPES = frozenset({"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze"})


# The shape probe's batch size: at 1, a (1, C, H, W) parameter added to a conv output has the
# same shape as a batch and would pass for a residual stream.
PROBE_BATCH = 2


class TraceError(TypeError):
    """The model cannot be analysed by torch.fx; the message is one line."""


@dataclass(frozen=True)
class Segment:
    """`width` consecutive channels: the filters of conv `source`, or never pruned if None."""

    source: str | None
    width: int


Layout = tuple[Segment, ...]


@dataclass(frozen=True)
class Op:
    """What a node does to a packed input: its kind, its tensor inputs, and how to name it."""

    kind: str
    inputs: tuple[fx.Node, ...]
    text: str


@dataclass
class Flow:
    """The analysed graph. `layouts[n]`: channel segments of node n where some are prunable.

    `conv_inputs[n]`: the layout a conv node reads with shrunken input channels (None: full).
    `blocked[conv]`: why that conv's pruned channels would have to be restored (first reason).
    """

    gm: fx.GraphModule
    shapes: dict[str, tuple[int, ...]]
    ops: dict[str, Op]
    layouts: dict[str, Layout] = field(default_factory=dict)
    conv_inputs: dict[str, Layout | None] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)

    @property
    def modules(self) -> dict[str, nn.Module]:
        return dict(self.gm.named_modules())


# ----------------------------------------------------------------------------- tracing


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers live on the meta device.

    No tensor data is copied (the deepcopy memo maps every tensor to an empty meta twin), so
    this is fast even for ResNet-101, and nothing run on the copy can touch the model.
    """
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        twin = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(twin, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else twin
    return copy.deepcopy(model, memo).eval()


class ThreadLocalTracer(fx.Tracer):
    """An fx tracer whose process-wide patches reach only the thread that traces.

    While `Tracer.trace` runs, fx replaces `nn.Module.__call__` and `nn.Module.__getattr__` for
    the whole interpreter; their replacements call this tracer's `call_module` and `getattr`.
    Here those two hand every call from another thread straight back to the originals, so a
    forward pass elsewhere (a training epoch, a user's cell, a benchmark) runs exactly the code
    it runs without a trace. `autowrap_modules=()`: fx would otherwise also patch `math`
    functions into the globals of every module whose forward runs meanwhile, including other
    threads' (a model that calls `math` on traced values is then refused in one line).
    """

    def __init__(self) -> None:
        super().__init__(autowrap_modules=(), autowrap_functions=())
        self._thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)  # the original Module.__call__, untraced
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        # `x += y` recorded as in-place (fx's own Proxy records a new `x + y`): see inplace.py
        return InplaceAwareProxy(node, self)


# Taken by tracers only, never by a forward pass: fx's patches nest, so two traces on two
# threads at once would each see the other's patch (and undo it in the wrong order).
_TRACERS = threading.RLock()


def trace(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace(model)` through `ThreadLocalTracer`, with a one-line error.

    Safe beside forward passes on other threads: they never see the trace (see the class).
    """
    try:
        with _TRACERS:
            tracer = ThreadLocalTracer()
            graph = tracer.trace(model)
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, NotImplementedError...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TraceError(
            f"{type(model).__name__} is not traceable by torch.fx ({type(e).__name__}: {first}); "
            "define prunable_conv_names() by hand (see docs/custom_models.md)"
        ) from None
    problems = resolve_inplace(gm)  # later readers of overwritten tensors read the new values
    if problems:
        raise TraceError(f"{type(model).__name__}: {problems[0]}; the channel flow cannot follow "
                         "values changed behind another name (write `x = x + y` instead of `x += y`)")
    return gm


def probe_shapes(gm: fx.GraphModule, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Output shape of every tensor-valued node, from one run on the meta device.

    `gm` must be a trace of a `meta_copy`; `input_shape` is the full (N, C, H, W). Answers are
    kept per architecture (`_probe_key`): the live fvcore count compacts the same architecture
    for every new set of kept counts, and the probe is half of that work.
    """
    key = _probe_key(gm, input_shape)
    with _PROBES_LOCK:
        if key in _PROBES:
            return dict(_PROBES[key])
    shapes: dict[str, tuple[int, ...]] = {}

    class _Probe(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape)
            return out

    try:
        with torch.no_grad():
            _Probe(gm).run(torch.empty(tuple(input_shape), device="meta"))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TraceError(
            f"shape probe with input {tuple(input_shape)} failed ({type(e).__name__}: {first}); "
            "pass the input size (C, H, W) the model expects"
        ) from None
    with _PROBES_LOCK:
        if len(_PROBES) >= 64:  # a handful of architectures per process; bound it anyway
            _PROBES.pop(next(iter(_PROBES)))
        _PROBES[key] = dict(shapes)
    return shapes


_PROBES: dict[tuple, dict[str, tuple[int, ...]]] = {}
_PROBES_LOCK = threading.Lock()


def _probe_key(gm: fx.GraphModule, input_shape: Sequence[int]) -> tuple:
    """What the probe's answer depends on: the graph's code, the definition of every module it
    calls (type and repr: kind and arguments) and every parameter's and buffer's shape and dtype."""
    modules = tuple((n.target, type(gm.get_submodule(n.target)).__qualname__,
                     repr(gm.get_submodule(n.target))) for n in gm.graph.nodes if n.op == "call_module")
    tensors = tuple((name, tuple(t.shape), t.dtype) for name, t in
                    list(gm.named_parameters()) + list(gm.named_buffers()))
    return gm.code, modules, tensors, tuple(int(s) for s in input_shape)


def guess_input_size(model: nn.Module, side: int = 32) -> tuple[int, int, int]:
    """(C, side, side) with C the input channels of the first conv: a probe size for models
    that work at several resolutions (global pooling before the classifier)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return (m.in_channels, side, side)
    raise TraceError(f"{type(model).__name__} has no nn.Conv2d; only Conv2d filters can be pruned")


# ----------------------------------------------------------------------------- node kinds


def _nodes_in(args: Iterable[Any]) -> list[fx.Node]:
    out: list[fx.Node] = []
    for a in args:
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += _nodes_in(a)
        elif isinstance(a, dict):
            out += _nodes_in(a.values())
    return out


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _spatial_index(index: Any, ndim: int) -> bool:
    """True for x[:, :, a:b:c, d:e:f] and x[..., a:b, c:d] on a 4-D tensor: channels untouched."""
    if ndim != 4 or not isinstance(index, tuple):
        return False
    if index and index[0] is Ellipsis:
        return len(index) <= 3 and all(isinstance(i, slice) for i in index[1:])
    full = slice(None, None, None)
    return (len(index) >= 2 and index[0] == full and index[1] == full
            and all(isinstance(i, slice) for i in index[2:]))


def conv_slices_input(conv: nn.Conv2d) -> bool:
    """Whether the exporter can drop input channels of `conv` and fold their constants.

    Folding needs plain zero padding (the map of a constant channel is then a sum of the kernel
    taps that fall inside the image) and one group (so any subset of channels can go).
    """
    padding_ok = not isinstance(conv.padding, str) or conv.padding == "valid"
    return conv.groups == 1 and conv.padding_mode == "zeros" and padding_ok


def classify(node: fx.Node, modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]],
             calls: dict[str, int]) -> Op:
    """How `node` treats a packed (channel-pruned) tensor among its inputs."""
    nodes = tuple(_nodes_in(node.args) + _nodes_in(node.kwargs.values()))
    if node.op in ("placeholder", "get_attr"):
        return Op(SOURCE, (), node.op)
    if node.op == "output":
        return Op(OUTPUT, nodes, "the model output")
    if node.op == "call_module":
        m = modules[node.target]
        text = f"`{node.target}` ({type(m).__name__})"
        if calls.get(node.target, 0) > 1 and any(True for _ in m.parameters(recurse=False)):
            return Op(OTHER, nodes, f"{text}, a module with parameters called at {calls[node.target]} places")
        if isinstance(m, nn.Conv2d):
            return Op(CONV, nodes[:1], text)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and len(shapes.get(node.name, ())) == 4:
            return Op(AFFINE, nodes[:1], text)
        if isinstance(m, POINTWISE_MODULES) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return Op(POINTWISE, nodes[:1], text)
        if isinstance(m, SPATIAL_MODULES) and not getattr(m, "return_indices", False):
            return Op(SPATIAL, nodes[:1], text)
        if isinstance(m, nn.AvgPool2d) and (m.padding in (0, (0, 0)) or not m.count_include_pad) \
                and m.divisor_override is None:
            return Op(SPATIAL, nodes[:1], text)
        return Op(OTHER, nodes, text)
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    text = f"`{name}`"
    first_is_only_node = len(nodes) == 1 and node.args and node.args[0] is nodes[0]
    if node.op == "call_function":
        if target in POINTWISE_FUNCTIONS and first_is_only_node:
            return Op(POINTWISE, nodes, text)
        if target in SCALAR_FUNCTIONS and len(nodes) == 1 and len(node.args) == 2 \
                and any(_is_number(a) for a in node.args) and not node.kwargs:
            return Op(POINTWISE, nodes, text)
        if target in ADD_FUNCTIONS and len(nodes) == 2 and len(node.args) == 2 and not node.kwargs:
            if shapes.get(nodes[0].name) != shapes.get(nodes[1].name) or nodes[0].name not in shapes:
                return Op(OTHER, nodes, f"{text} with broadcasting")
            if any(n.op == "get_attr" for n in nodes):  # a parameter or buffer is no residual stream
                return Op(OTHER, nodes, f"{text} of a parameter or buffer")
            return Op(ADD, nodes, text)
        if target is torch.cat:
            dim = _arg(node, 1, "dim", 0)
            ndim = len(shapes.get(node.name, ()))
            if ndim == 4 and dim in (1, -3):
                return Op(CAT, nodes, text)
            return Op(OTHER, nodes, f"{text} along dim {dim}")
        if target in SPATIAL_FUNCTIONS and first_is_only_node:
            if target is operator.getitem:
                ok = _spatial_index(node.args[1], len(shapes.get(node.args[0].name, ())))
                return Op(SPATIAL if ok else OTHER, nodes, "indexing" if ok else "indexing of channels")
            if target is F.avg_pool2d:
                padded = _arg(node, 3, "padding", 0) not in (0, (0, 0))
                if (padded and _arg(node, 5, "count_include_pad", True)) or _arg(node, 6, "divisor_override", None):
                    return Op(OTHER, nodes, f"{text} with zero padding")
            if target in (F.max_pool2d, F.adaptive_max_pool2d) and _arg(node, 6 if target is F.max_pool2d else 2,
                                                                         "return_indices", False):
                return Op(OTHER, nodes, f"{text} returning indices")
            return Op(SPATIAL, nodes, text)
        return Op(OTHER, nodes, text)
    if node.op == "call_method":
        text = f"`.{target}()`"
        if target in RESHAPES:
            return Op(OTHER, nodes, f"{text}, which mixes channels with positions")
        if target in POINTWISE_METHODS and first_is_only_node:
            return Op(POINTWISE, nodes, text)
        if target in SCALAR_METHODS and len(nodes) == 1 and len(node.args) == 2 and _is_number(node.args[1]) \
                and not node.kwargs:
            return Op(POINTWISE, nodes, text)
        if target in ADD_METHODS and len(nodes) == 2 and len(node.args) == 2 and not node.kwargs:
            if shapes.get(nodes[0].name) != shapes.get(nodes[1].name) or nodes[0].name not in shapes:
                return Op(OTHER, nodes, f"{text} with broadcasting")
            if any(n.op == "get_attr" for n in nodes):
                return Op(OTHER, nodes, f"{text} of a parameter or buffer")
            return Op(ADD, nodes, text)
        return Op(OTHER, nodes, text)
    return Op(OTHER, nodes, text)


def _reason(op: Op) -> str:
    if op.kind == OUTPUT:
        return "its output is a model output"
    if op.text.startswith("`flatten`") or "mixes channels" in op.text:
        return f"its output reaches {op.text.split(',')[0]}, which mixes channels with positions"
    return f"its output reaches {op.text}, which the tool cannot shrink"


# ----------------------------------------------------------------------------- the analysis


def analyse(model: nn.Module, input_size: Sequence[int], sources: Iterable[str] | None = None) -> Flow:
    """Trace `model` (on a meta copy) and follow the channels of the convs named in `sources`.

    `sources=None` follows every Conv2d that could be pruned at all (one group, one call site).
    `input_size` is (C, H, W). The model itself is neither run nor changed.
    """
    gm = trace(meta_copy(model))
    shapes = probe_shapes(gm, (PROBE_BATCH, *input_size))
    return follow(gm, shapes, sources)


def follow(gm: fx.GraphModule, shapes: dict[str, tuple[int, ...]], sources: Iterable[str] | None) -> Flow:
    """The channel-flow pass proper, on an already traced and probed graph."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    wanted = None if sources is None else set(sources)
    flow = Flow(gm, shapes, {})
    for node in gm.graph.nodes:
        op = classify(node, modules, shapes, calls)
        flow.ops[node.name] = op
        packed = [(n, flow.layouts[n.name]) for n in op.inputs if n.name in flow.layouts]
        layout: Layout | None = None
        if op.kind == CONV:
            conv = modules[node.target]
            slices = conv_slices_input(conv)
            flow.conv_inputs[node.name] = packed[0][1] if packed and slices else None
            if packed and not slices:
                _block(flow, packed, f"its output feeds conv `{node.target}` (groups={conv.groups}, "
                                     f"padding {conv.padding!r}, mode {conv.padding_mode!r}), whose "
                                     "input channels cannot be removed")
            if (wanted is None or node.target in wanted) and conv.groups == 1 and calls[node.target] == 1:
                layout = (Segment(node.target, conv.out_channels),)
        elif op.kind in (AFFINE, POINTWISE, SPATIAL):
            layout = packed[0][1] if packed else None
        elif op.kind == CAT and packed:
            layout = tuple(s for n in op.inputs
                           for s in flow.layouts.get(n.name, (Segment(None, shapes[n.name][1]),)))
        elif op.kind in (OTHER, OUTPUT) and packed:
            _block(flow, packed, _reason(op))
        if layout is not None and any(s.source is not None for s in layout):
            flow.layouts[node.name] = layout
    return flow


def _block(flow: Flow, packed: list[tuple[fx.Node, Layout]], reason: str) -> None:
    for _, layout in packed:
        for s in layout:
            if s.source is not None:
                flow.blocked.setdefault(s.source, reason)


def conv_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The call sites of nn.Conv2d modules, in forward order."""
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)]


def find_prunable_layers(model: nn.Module, example_input: torch.Tensor | Sequence[int]
                         ) -> tuple[list[str], list[tuple[str, str]]]:
    """Convs of a user's own model whose filters the tool can prune and remove exactly.

    `example_input`: a batch (N, C, H, W) or an input size (C, H, W); only its shape is used.
    Returns (prunable names in forward order, [(name, reason)] for every conv left out).
    Raises TraceError when torch.fx cannot trace the model.
    """
    size = tuple(example_input.shape[1:]) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if len(size) != 3:
        raise ValueError(f"example_input: shape {size} is not (C, H, W) or a batch (N, C, H, W)")
    flow = analyse(model, size, None)
    modules = flow.modules
    calls: dict[str, int] = {}
    for n in conv_nodes(flow.gm):
        calls[n.target] = calls.get(n.target, 0) + 1
    prunable: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n in conv_nodes(flow.gm):
        name = n.target
        if name in seen:
            continue
        seen.add(name)
        conv = modules[name]
        if conv.groups != 1:
            kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
            skipped.append((name, f"{kind} conv (groups={conv.groups}): its filters are tied to "
                                  "input-channel groups"))
        elif calls[name] > 1:
            skipped.append((name, f"called at {calls[name]} places in forward; only single-use convs can be pruned"))
        elif name in flow.blocked:
            skipped.append((name, flow.blocked[name]))
        else:
            prunable.append(name)
    # Convs that forward never calls (or other conv types) are not in the graph: say so.
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name not in seen:
            skipped.append((name, "not called in forward"))
        elif isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
            skipped.append((name, f"{type(m).__name__}: only Conv2d filters are pruned"))
    return prunable, skipped

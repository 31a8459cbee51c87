"""In-place ops in a traced graph: make what they overwrite explicit, or refuse.

torch.fx records `x += y` as a plain `x + y` (its Proxy has no in-place operators), so after
`skip = x; x += f(x); torch.cat([x, skip])` the graph's `skip` still holds the old `x`, while
the model's `skip` is the very tensor that was overwritten: a graph rewrite built on it would be
silently wrong. `InplaceAwareProxy` records augmented assignments as `operator.iadd` & co.,
and `resolve_inplace` rewires every later reader of an overwritten tensor (or of another name
for the same tensor) to the in-place node's result, which is what that reader sees in eager
mode. Where a *view* of the overwritten tensor (or the tensor as a view of another) is read
later, values change behind differently shaped names; that is refused with one line.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
from torch import fx, nn

INPLACE_OPERATORS = ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul",
                     "iand", "ior", "ixor", "ilshift", "irshift")


class InplaceAwareProxy(fx.Proxy):
    """An fx Proxy that records `x += y` (and the other augmented assignments) as the in-place
    `operator.iadd(x, y)` & co., which mutate `x` at run time, instead of a new `x + y`."""


def _augmented(name: str) -> Any:
    target = getattr(operator, name)

    def method(self: fx.Proxy, other: Any) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", target, (self, other), {})

    return method


for _name in INPLACE_OPERATORS:
    setattr(InplaceAwareProxy, f"__{_name}__", _augmented(_name))

_INPLACE_TARGETS = frozenset(getattr(operator, n) for n in INPLACE_OPERATORS)
# Ops whose result shares storage with their first argument under another shape.
VIEW_METHODS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "expand", "expand_as", "narrow", "select", "unfold", "as_strided",
    "chunk", "split", "split_with_sizes", "unbind", "movedim", "swapaxes", "diagonal", "detach",
    "contiguous", "__getitem__",
})
VIEW_FUNCTIONS = frozenset({
    operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
    torch.unsqueeze, torch.chunk, torch.split, torch.narrow, torch.select, torch.detach, torch.t,
    torch.movedim, torch.unbind,
})
VIEW_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten)
# Modules that (in eval mode) hand back their input itself: another name for the same tensor.
SAME_MODULES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)


def _name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def overwritten(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The tensor an in-place node writes into (its first argument), or None."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_module":
        return node.args[0] if getattr(modules.get(node.target), "inplace", False) is True else None
    if node.op == "call_method":
        name = node.target
        return node.args[0] if name.endswith("_") and not name.endswith("__") else None
    if node.op != "call_function":
        return None
    name = _name(node)
    if node.target in _INPLACE_TARGETS or (name.endswith("_") and not name.endswith("__")):
        return node.args[0]
    try:  # F.relu(x, inplace=True), F.dropout(x, 0.5, False, True), ...
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return None
    return node.args[0] if bound.arguments.get("inplace") is True else None


def is_view(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return node.target in VIEW_METHODS
    if node.op == "call_function":
        return node.target in VIEW_FUNCTIONS
    if node.op == "call_module":
        return isinstance(modules.get(node.target), VIEW_MODULES)
    return False


def _same_tensor(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The node whose tensor `node` returns itself (in-place ops, identity modules), or None."""
    first = overwritten(node, modules)
    if first is None and node.op == "call_module" and isinstance(modules.get(node.target), SAME_MODULES) \
            and node.args and isinstance(node.args[0], fx.Node):
        first = node.args[0]
    return first


def resolve_inplace(gm: fx.GraphModule) -> list[str]:
    """Rewire later readers of every overwritten tensor to the in-place node; returns, per
    refused case, a one-line reason (the graph is left rewired as far as it could be)."""
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    problems: list[str] = []
    for m in list(gm.graph.nodes):
        x = overwritten(m, modules)
        if x is None:
            continue
        # every name of the same tensor: follow in-place / identity links both ways
        names, todo = {x}, [x]
        while todo:
            n = todo.pop()
            linked = [u for u in n.users if _same_tensor(u, modules) is n]
            source = _same_tensor(n, modules)
            for other in linked + ([source] if source is not None else []):
                if other not in names:
                    names.add(other)
                    todo.append(other)
        for n in names:
            if is_view(n, modules):
                problems.append(f"in-place `{_name(m)}` at `{m.name}` writes into `{n.name}`, a view of "
                                "another tensor")
            for u in list(n.users):
                if u is m:
                    continue
                if is_view(u, modules):
                    if order[u] > order[m] or any(order[w] > order[m] for w in u.users):
                        problems.append(f"in-place `{_name(m)}` at `{m.name}` changes `{n.name}`, which "
                                        f"view `{u.name}` reads later")
                elif order[u] > order[m]:
                    u.replace_input_with(n, m)  # in eager mode it reads the overwritten tensor
    if not problems:
        gm.recompile()
    return problems

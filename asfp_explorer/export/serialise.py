"""Serialisation of the compact model: `save_compact` / `load_compact`.

A file holds `{format, architecture, state_dict}`, written with torch.save and read with
`torch.load(weights_only=True)` (tensors and plain data only). `architecture` describes the
fx graph with names from the closed vocabulary (vocabulary.py); loading checks every name
against it before anything is built, builds the modules on the meta device (no memory is
allocated for sizes the file claims), checks the Python source torch.fx generates from the
graph, and only then compiles it. docs/compact_format.md lists what a file may contain.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import fx, nn

from . import vocabulary as vocab
from .vocabulary import CompactFormatError

FORMAT = "asfp-explorer/compact-v1"
NODE_OPS = ("placeholder", "get_attr", "call_module", "call_function", "call_method", "output")
_ARCHITECTURE_KEYS = {"format", "dtype", "widths", "modules", "attributes", "graph"}
_NODE_KEYS = {"name", "op", "target", "args", "kwargs"}


# ----------------------------------------------------------------------------- arguments


def _encode(a: Any, where: str) -> Any:
    if isinstance(a, fx.Node):
        return {"node": a.name}
    if isinstance(a, tuple):
        return {"tuple": [_encode(x, where) for x in a]}
    if isinstance(a, list):
        return [_encode(x, where) for x in a]
    if isinstance(a, dict):
        return {"dict": {vocab.keyword_name(k, where, "dict key"): _encode(v, where) for k, v in a.items()}}
    if isinstance(a, slice):
        return {"slice": [_encode(a.start, where), _encode(a.stop, where), _encode(a.step, where)]}
    if a is Ellipsis:
        return {"ellipsis": True}
    if isinstance(a, torch.dtype):
        return {"dtype": vocab.dtype_name(a, where)}
    if isinstance(a, torch.memory_format):
        name = str(a).removeprefix("torch.")
        vocab.memory_format(name, where)
        return {"memory_format": name}
    if a is None or type(a) in (bool, int, float, str):
        return a
    raise CompactFormatError(f"{where}: argument {a!r} of type {type(a).__name__} cannot be saved; "
                             "allowed: nodes, numbers, strings, None, tuples, lists, dicts, slices, "
                             "dtypes, memory formats")


def _decode(a: Any, env: Mapping[str, fx.Node], where: str) -> Any:
    """The fx argument encoded by `_encode`; plain data of the listed types only."""
    if a is None or type(a) in (bool, int, float, str):
        return a
    if type(a) is list:
        return [_decode(x, env, where) for x in a]
    if type(a) is not dict or len(a) != 1:
        raise CompactFormatError(f"{where}: argument of type {type(a).__name__} is not allowed; "
                                 "allowed: None, bool, int, float, str, list, one-key encodings")
    (key, value), = a.items()
    if key == "node":
        if not isinstance(value, str) or value not in env:
            raise CompactFormatError(f"{where}: argument refers to {value!r}, which is no earlier node")
        return env[value]
    if key == "tuple" and type(value) is list:
        return tuple(_decode(x, env, where) for x in value)
    if key == "dict" and type(value) is dict:
        return {vocab.keyword_name(k, where, "dict key"): _decode(v, env, where) for k, v in value.items()}
    if key == "slice" and type(value) is list and len(value) == 3:
        return slice(*(_decode(x, env, where) for x in value))
    if key == "ellipsis" and value is True:
        return Ellipsis
    if key == "dtype":
        return vocab.dtype(value, where)
    if key == "memory_format":
        return vocab.memory_format(value, where)
    raise CompactFormatError(f"{where}: argument encoding {key!r} is not allowed; allowed: node, "
                             "tuple, dict, slice, ellipsis, dtype, memory_format")


def _holds_node(a: Any) -> bool:
    found = []
    fx.node.map_arg(a, found.append)
    return bool(found)


# ----------------------------------------------------------------------------- modules


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _constructor_args(m: nn.Module, where: str) -> dict[str, Any]:
    """The constructor arguments of a module, read back from its same-named attributes."""
    args: dict[str, Any] = {}
    for p in list(inspect.signature(type(m).__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if not hasattr(m, p.name):
            if p.default is p.empty:
                raise CompactFormatError(f"{where}: cannot read constructor argument {p.name!r} of "
                                         f"{type(m).__name__}; allowed: modules that store their arguments")
            continue
        v = getattr(m, p.name)
        if isinstance(v, torch.Tensor) or (v is None and isinstance(p.default, bool)):
            v = v is not None  # e.g. Conv2d / Linear `bias`: the parameter, or None
        if v is None and p.default is None and p.name in ("min_value", "max_value"):
            continue  # Hardtanh's deprecated aliases
        args[p.name] = _jsonable(v)
    return args


# ----------------------------------------------------------------------------- save


def architecture(module: fx.GraphModule) -> dict[str, Any]:
    """A JSON-able description of a compact model: graph, module constructors, tensor shapes.
    Raises CompactFormatError for anything outside the closed vocabulary."""
    if not isinstance(module, fx.GraphModule):
        raise TypeError(f"save_compact: expected the fx.GraphModule that compact() returns, got {type(module).__name__}")
    modules = dict(module.named_modules())
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    nodes, used, attrs = [], {}, {}
    for n in module.graph.nodes:
        where = f"save_compact: node {n.name!r}"
        vocab.identifier(n.name, where, "node name")
        target: Any = n.target
        if n.op == "call_module":
            vocab.path(n.target, where, "module name")
            m = modules[n.target]
            used[n.target] = {"type": vocab.module_type_name(m, where), "args": _constructor_args(m, where)}
        elif n.op == "call_function":
            target = vocab.function_name(n.target, where)
        elif n.op == "call_method":
            vocab.method(n.target, where)
        elif n.op == "get_attr":
            vocab.path(n.target, where, "attribute")
            t = tensors.get(n.target)
            if t is None:
                raise CompactFormatError(f"{where}: attribute {n.target!r} is not a parameter or buffer")
            attrs[n.target] = {"kind": "parameter" if isinstance(t, nn.Parameter) else "buffer",
                               "shape": list(t.shape), "dtype": vocab.dtype_name(t.dtype, where)}
        elif n.op == "placeholder":
            vocab.identifier(n.target, where, "input name")
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _encode(n.args, where), "kwargs": _encode(dict(n.kwargs), where)})
    widths = {name: [m.in_channels, m.out_channels] for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    param = next(module.parameters(), None)
    arch = {"format": FORMAT, "dtype": vocab.dtype_name(param.dtype if param is not None else torch.float32,
                                                         "save_compact: dtype"),
            "widths": widths, "modules": used, "attributes": attrs, "graph": nodes}
    _check_graph(arch, "save_compact")  # what is saved loads again
    return arch


def save_compact(module: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write `{format, architecture, state_dict}` to `path` (torch.save; loadable with
    `torch.load(weights_only=True)`), atomically."""
    payload = {"format": FORMAT, "architecture": architecture(module),
               "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    from ..store.files import user_file_mode

    os.fchmod(fd, user_file_mode())  # mkstemp's files are owner-only; follow the umask
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------- load


def _check_graph(arch: Any, who: str) -> fx.Graph:
    """The fx graph `arch` describes, every name checked against the vocabulary (nothing run)."""
    if not isinstance(arch, dict) or set(arch) != _ARCHITECTURE_KEYS:
        raise CompactFormatError(f"{who}: architecture must be a dict with keys {sorted(_ARCHITECTURE_KEYS)}")
    if arch["format"] != FORMAT:
        raise CompactFormatError(f"{who}: format {arch['format']!r} is not supported; allowed: {FORMAT}")
    modules, attributes = arch["modules"], arch["attributes"]
    if not isinstance(modules, dict) or not isinstance(attributes, dict) or not isinstance(arch["graph"], list):
        raise CompactFormatError(f"{who}: modules and attributes must be dicts, graph a list")
    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    outputs = 0
    for i, e in enumerate(arch["graph"]):
        if not isinstance(e, dict) or set(e) != _NODE_KEYS:
            raise CompactFormatError(f"{who}: graph entry {i} must be a dict with keys {sorted(_NODE_KEYS)}")
        name = vocab.identifier(e["name"], f"{who}: graph entry {i}", "node name")
        where = f"{who}: node {name!r}"
        if name in env:
            raise CompactFormatError(f"{where}: the name is used twice")
        op, target = e["op"], e["target"]
        if op not in NODE_OPS:
            raise CompactFormatError(f"{where}: op {op!r} is not allowed; allowed: {', '.join(NODE_OPS)}")
        if type(e["kwargs"]) is dict and type(e["kwargs"].get("dict")) is dict:
            for key in e["kwargs"]["dict"]:
                vocab.keyword_name(key, where)
        args, kwargs = _decode(e["args"], env, where), _decode(e["kwargs"], env, where)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise CompactFormatError(f"{where}: args must encode a tuple and kwargs a dict")
        if op == "placeholder":
            vocab.identifier(target, where, "input name")
            if _holds_node((args, kwargs)) or kwargs or len(args) > 1:
                raise CompactFormatError(f"{where}: an input takes at most one constant default")
        elif op == "output":
            if target != "output" or len(args) != 1 or kwargs:
                raise CompactFormatError(f"{where}: the output node is output(value)")
            outputs += 1
        elif op == "get_attr":
            if not isinstance(target, str) or target not in attributes or args or kwargs:
                raise CompactFormatError(f"{where}: get_attr target {target!r} is not an attribute "
                                         "the file declares")
        elif op == "call_module":
            if not isinstance(target, str) or target not in modules:
                raise CompactFormatError(f"{where}: module {target!r} is not a module the file declares")
        elif op == "call_method":
            vocab.method(target, where)
            if not args or not isinstance(args[0], fx.Node):
                raise CompactFormatError(f"{where}: a method is called on a node")
        else:  # call_function
            fn = vocab.function(target, where)
            if fn is builtins.getattr:
                if kwargs or len(args) != 2 or not isinstance(args[0], fx.Node) \
                        or not isinstance(args[1], str) or args[1] not in vocab.TENSOR_ATTRIBUTES:
                    raise CompactFormatError(f"{where}: getattr is allowed only as getattr(node, name) "
                                             f"with name in {sorted(vocab.TENSOR_ATTRIBUTES)}")
            target = fn
        node = g.create_node(op, target, args, kwargs, name=name)
        if node.name != name:  # fx renamed it: a clash with a name it reserves
            raise CompactFormatError(f"{where}: the name is reserved")
        env[name] = node
    if outputs != 1 or not env or next(reversed(g.nodes)).op != "output":
        raise CompactFormatError(f"{who}: the graph must end in exactly one output node")
    for name in modules:
        vocab.path(name, f"{who}: module {name!r}", "module name")
    for name in attributes:
        vocab.path(name, f"{who}: attribute {name!r}", "attribute name")
    declared = sorted([*modules, *attributes])
    for a, b in zip(declared, declared[1:]):
        if a == b or b.startswith(a + "."):
            raise CompactFormatError(f"{who}: {b!r} is declared twice or inside the declared {a!r}")
    return g


def _allowed_globals() -> list[Any]:
    from torch.fx import _pytree as fx_pytree
    from torch.utils import _pytree as pytree
    return [torch, math.inf, math.nan, type(None), torch.device, fx_pytree, pytree, builtins.getattr,
            *vocab.FUNCTIONS.values()]


_AST_NODES = (ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.AugAssign, ast.Return,
              ast.Expr, ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Call, ast.keyword, ast.Constant,
              ast.Tuple, ast.List, ast.Dict, ast.Subscript, ast.Slice, ast.UnaryOp, ast.USub, ast.UAdd,
              ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.MatMult)


def _torch_paths() -> set[str]:
    """The dotted `torch.` paths generated code may spell: the vocabulary's functions (as fx
    names them, e.g. torch._C._nn.avg_pool2d), dtypes, memory formats, and their prefixes."""
    from torch.fx.node import _get_qualified_name
    full = {_get_qualified_name(f) for f in vocab.FUNCTIONS.values()}
    full |= {f"torch.{n}" for n in (*vocab.DTYPES, *vocab.MEMORY_FORMATS)}
    return {".".join(p.split(".")[:i]) for p in full for i in range(1, p.count(".") + 2)}


def _dotted(n: ast.AST) -> str | None:
    """`torch.a.b` for an attribute chain rooted at the name torch, else None."""
    parts = []
    while isinstance(n, ast.Attribute):
        parts.append(n.attr)
        n = n.value
    return ".".join(["torch", *reversed(parts)]) if isinstance(n, ast.Name) and n.id == "torch" else None


def _check_source(g: fx.Graph, who: str) -> None:
    """The Python source torch.fx will compile for `g`: only names, calls and constants; no
    underscore attribute (but the vocabulary's own torch paths), no name that is not a node,
    an input or a known global."""
    code = g.python_code(root_module="self")
    torch_paths = _torch_paths()
    allowed = [id(o) for o in _allowed_globals()]
    for key, value in code.globals.items():
        if id(value) not in allowed:
            raise CompactFormatError(f"{who}: generated code needs global {key!r}, which is not allowed")
    names = {n.name for n in g.nodes} | {str(n.target) for n in g.nodes if n.op == "placeholder"}
    names |= set(code.globals) | {"self", "getattr", "slice", "Ellipsis"}
    try:
        tree = ast.parse(code.src)
    except SyntaxError:
        raise CompactFormatError(f"{who}: the graph does not give valid Python source") from None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(tree.body) != 1 or len(functions) != 1 or functions[0].name != "forward" or functions[0].decorator_list:
        raise CompactFormatError(f"{who}: the generated source is not a single forward()")
    for n in ast.walk(tree):
        if not isinstance(n, _AST_NODES):
            raise CompactFormatError(f"{who}: the generated source holds a {type(n).__name__}, which is not allowed")
        dotted = _dotted(n) if isinstance(n, ast.Attribute) else None
        bad = ((dotted is not None and dotted not in torch_paths)
               or (dotted is None and isinstance(n, ast.Attribute) and n.attr.startswith("_"))
               or (isinstance(n, ast.Name) and n.id not in names)
               or (isinstance(n, ast.keyword) and (n.arg is None or n.arg.startswith("_"))))
        if bad:
            raise CompactFormatError(f"{who}: the generated source uses {ast.unparse(n)!r}, which is not allowed")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "getattr":
            if len(n.args) != 2 or not isinstance(n.args[1], ast.Constant) \
                    or not vocab.PATH_PART.match(str(n.args[1].value)):
                raise CompactFormatError(f"{who}: the generated source uses {ast.unparse(n)!r}, which is not allowed")


def rebuild(arch: Mapping[str, Any], who: str = "load_compact") -> fx.GraphModule:
    """The compact model described by `architecture()`, on the meta device (no memory, no
    values): load its state_dict with `assign=True` next. Checks everything first."""
    g = _check_graph(arch, who)
    dtype = vocab.dtype(arch["dtype"], f"{who}: dtype")
    root = nn.Module()

    def install(name: str, value: Any) -> None:
        parent = root
        *parts, leaf = name.split(".")
        for p in parts:
            if p not in parent._modules:
                parent.add_module(p, nn.Module())
            parent = parent._modules[p]
            if parent is None or type(parent) is not nn.Module:
                raise CompactFormatError(f"{who}: {name!r} lies inside another declared module")
        if isinstance(value, nn.Parameter):
            parent.register_parameter(leaf, value)
        elif isinstance(value, torch.Tensor):
            parent.register_buffer(leaf, value)
        else:
            parent.add_module(leaf, value)

    with torch.device("meta"):  # sizes are the file's claims: allocate nothing for them
        for name, spec in arch["modules"].items():
            where = f"{who}: module {name!r}"
            if not isinstance(spec, dict) or set(spec) != {"type", "args"}:
                raise CompactFormatError(f"{where}: must be a dict with keys 'type' and 'args'")
            cls = vocab.check_module(spec["type"], spec["args"], where)
            try:
                module = cls(**{k: _tuples(v) for k, v in spec["args"].items()})
                install(name, module)
            except CompactFormatError:
                raise
            except Exception as e:  # the constructor or add_module refused the arguments
                raise CompactFormatError(f"{where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        for name, spec in arch["attributes"].items():
            where = f"{who}: attribute {name!r}"
            if not isinstance(spec, dict) or set(spec) != {"kind", "shape", "dtype"} \
                    or spec["kind"] not in ("parameter", "buffer") or type(spec["shape"]) is not list \
                    or not all(type(s) is int and s >= 0 for s in spec["shape"]):
                raise CompactFormatError(f"{where}: must be {{kind: parameter|buffer, shape: [ints], dtype}}")
            t = torch.zeros(spec["shape"], dtype=vocab.dtype(spec["dtype"], where))
            try:
                install(name, nn.Parameter(t, requires_grad=t.is_floating_point()) if spec["kind"] == "parameter" else t)
            except CompactFormatError:
                raise
            except Exception as e:
                raise CompactFormatError(f"{where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    _check_source(g, who)  # last gate before torch.fx compiles the source
    return fx.GraphModule(root, g).to(dtype).eval()


def load_compact(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> fx.GraphModule:
    """The compact model saved by `save_compact`, in eval mode; needs neither the original model
    nor its class. Unpickles nothing but tensors and plain data (weights_only=True) and builds
    only what the closed vocabulary names; anything else raises CompactFormatError (one line)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but plain data, or a damaged file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompactFormatError(f"load_compact: {path} cannot be read as plain data ({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict) or set(payload) != {"format", "architecture", "state_dict"} \
            or payload["format"] != FORMAT:
        raise CompactFormatError(f"load_compact: {path} is not a compact model file; expected format {FORMAT}")
    try:
        module = rebuild(payload["architecture"])
        state = payload["state_dict"]
        expected = module.state_dict()
        if not isinstance(state, dict) or set(state) != set(expected):
            missing = sorted(set(expected) - set(state)) if isinstance(state, dict) else []
            raise CompactFormatError(f"load_compact: state_dict does not match the architecture "
                                     f"(missing: {', '.join(missing[:3]) or '-'})")
        for k, want in expected.items():
            got = state[k]
            if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
                raise CompactFormatError(f"load_compact: state_dict entry {k!r} is not a {want.dtype} "
                                         f"tensor of shape {tuple(want.shape)}")
        module.load_state_dict(state, strict=True, assign=True)
    except CompactFormatError:
        raise
    except Exception as e:  # anything the checks above let through still gets one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CompactFormatError(f"load_compact: {path} is not a valid compact model ({type(e).__name__}: "
                                 f"{first})") from None
    return module.to(map_location).eval()

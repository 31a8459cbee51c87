"""The closed vocabulary of a saved compact model: everything `load_compact` will build.

A compact model file is plain data (tensors, numbers, strings, lists, dicts). Loading it must
never run code, so nothing in the file is looked up by name in a Python namespace: each name is
a key of one of the explicit tables below, and anything that is not is refused with a
`CompactFormatError` naming the node or field. `save_compact` checks against the same tables,
so every model it writes loads again. docs/compact_format.md describes the same rules.

- functions: `FUNCTIONS` (name -> function); `getattr` only as `getattr(tensor, name)` with
  `name` in `TENSOR_ATTRIBUTES`;
- tensor methods: `METHODS`;
- module types: `MODULES`, each with the type of every constructor argument;
- dtypes and memory formats: `DTYPES`, `MEMORY_FORMATS`;
- names (nodes, modules, attributes, keyword arguments): `IDENTIFIER` / `PATH_PART`, never
  starting with "_", never a Python keyword or builtin.
"""

from __future__ import annotations

import builtins
import keyword
import operator
import re
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .constants import ConstantInputMap, Expand, ScatterAdd
from .fuse import ScatterAddInPlace


class CompactFormatError(ValueError):
    """A compact model file (or a model to save) outside the closed vocabulary; one line."""


# ----------------------------------------------------------------------------- functions

_OPERATOR = ("add", "iadd", "sub", "isub", "mul", "imul", "truediv", "itruediv", "floordiv",
             "neg", "getitem", "matmul")
_TORCH = ("flatten", "cat", "stack", "add", "sub", "mul", "div", "relu", "relu_", "sigmoid", "tanh",
          "clamp", "clip", "reshape", "squeeze", "unsqueeze", "mean", "sum", "amax", "amin", "max",
          "min", "softmax", "log_softmax", "matmul", "transpose", "permute", "chunk", "split",
          "narrow", "index_select", "where", "abs", "exp", "log", "sqrt", "pow", "neg", "square",
          "max_pool2d", "conv2d", "batch_norm")
_FUNCTIONAL = ("relu", "relu_", "relu6", "leaky_relu", "elu", "celu", "selu", "gelu", "silu", "mish",
               "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "dropout",
               "dropout2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
               "interpolate", "pad", "linear", "conv2d", "batch_norm", "softmax", "log_softmax")

# name -> function: the only functions a saved graph may call (numeric ops; never I/O).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f"operator.{n}": getattr(operator, n) for n in _OPERATOR},
    **{f"torch.{n}": getattr(torch, n) for n in _TORCH},
    **{f"torch.nn.functional.{n}": getattr(F, n) for n in _FUNCTIONAL},
    "builtins.getattr": builtins.getattr,  # only getattr(tensor, one of TENSOR_ATTRIBUTES)
}
TENSOR_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device"})

# function -> name for saving; the first name of a function listed twice (F.conv2d is torch.conv2d)
_FUNCTION_NAMES: dict[int, str] = {}
for _name, _fn in FUNCTIONS.items():
    _FUNCTION_NAMES.setdefault(id(_fn), _name)

# The tensor methods a saved graph may call (`x.<method>(...)`).
METHODS = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
    "clamp_max", "contiguous", "clone", "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
    "view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "size", "dim",
    "mean", "sum", "amax", "amin", "max", "min", "softmax", "log_softmax", "chunk", "split",
    "expand", "expand_as", "view_as", "reshape_as", "matmul", "abs", "exp", "neg", "pow", "sqrt",
    "float", "narrow", "index_select",
})

DTYPES: dict[str, torch.dtype] = {n: getattr(torch, n) for n in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}
MEMORY_FORMATS: dict[str, torch.memory_format] = {n: getattr(torch, n) for n in (
    "contiguous_format", "channels_last", "preserve_format")}


def function_name(fn: Any, where: str) -> str:
    """The vocabulary name of `fn` (for saving)."""
    name = _FUNCTION_NAMES.get(id(fn))
    if name is None or FUNCTIONS[name] is not fn:
        raise CompactFormatError(f"{where}: function {getattr(fn, '__module__', '')}."
                                 f"{getattr(fn, '__name__', repr(fn))} is not in the compact "
                                 "vocabulary; allowed: see asfp_explorer.export.vocabulary.FUNCTIONS")
    return name


def function(name: Any, where: str) -> Callable[..., Any]:
    """The function a saved name stands for (for loading)."""
    if not isinstance(name, str) or name not in FUNCTIONS:
        raise CompactFormatError(f"{where}: function {name!r} is not allowed; allowed: "
                                 f"{', '.join(sorted(FUNCTIONS))}")
    return FUNCTIONS[name]


def method(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in METHODS:
        raise CompactFormatError(f"{where}: tensor method {name!r} is not allowed; allowed: "
                                 f"{', '.join(sorted(METHODS))}")
    return name


def dtype(name: Any, where: str) -> torch.dtype:
    if not isinstance(name, str) or name not in DTYPES:
        raise CompactFormatError(f"{where}: dtype {name!r} is not allowed; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(value: torch.dtype, where: str) -> str:
    name = str(value).removeprefix("torch.")
    dtype(name, where)
    return name


def memory_format(name: Any, where: str) -> torch.memory_format:
    if not isinstance(name, str) or name not in MEMORY_FORMATS:
        raise CompactFormatError(f"{where}: memory format {name!r} is not allowed; allowed: "
                                 f"{', '.join(MEMORY_FORMATS)}")
    return MEMORY_FORMATS[name]


# ----------------------------------------------------------------------------- names

# A node, placeholder or keyword-argument name: a plain identifier, no leading underscore.
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# One part of a dotted module or attribute path ("layer1.0.conv1").
PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*\Z")
# Names the generated forward() itself uses; a node of that name would shadow them.
_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {
    "self", "torch", "inf", "nan", "device", "NoneType", "pytree", "fx_pytree", "operator"}


def identifier(name: Any, where: str, what: str = "name") -> str:
    if not isinstance(name, str) or not IDENTIFIER.match(name) or name in _RESERVED:
        raise CompactFormatError(f"{where}: {what} {name!r} is not allowed; allowed: a Python "
                                 "identifier of letters, digits and '_' that starts with a letter "
                                 "and is no keyword or builtin")
    return name


def keyword_name(name: Any, where: str, what: str = "keyword argument") -> str:
    """A keyword-argument name (`min`, `input` are fine here: they name no variable)."""
    if not isinstance(name, str) or not IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise CompactFormatError(f"{where}: {what} {name!r} is not allowed; allowed: a Python "
                                 "identifier of letters, digits and '_' that starts with a letter")
    return name


def path(name: Any, where: str, what: str = "name") -> str:
    if not isinstance(name, str) or not all(PATH_PART.match(p) for p in name.split(".")):
        raise CompactFormatError(f"{where}: {what} {name!r} is not allowed; allowed: dot-separated "
                                 "parts of letters, digits and '_', none starting with '_'")
    return name


# ----------------------------------------------------------------------------- module types


def _is_int(v: Any) -> bool:
    return type(v) is int


def _int(v: Any) -> bool:
    return _is_int(v)


def _bool(v: Any) -> bool:
    return type(v) is bool


def _float(v: Any) -> bool:
    return type(v) in (int, float)


def _ints(v: Any) -> bool:
    """an int, or a list of ints (tuples are saved as lists)"""
    return _is_int(v) or (type(v) is list and all(_is_int(x) for x in v))


def _pair(v: Any) -> bool:
    """a list of two ints"""
    return type(v) is list and len(v) == 2 and all(_is_int(x) for x in v)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _choice(*values: str) -> Callable[[Any], bool]:
    return lambda v: type(v) is str and v in values


def _padding(v: Any) -> bool:
    return _ints(v) or (type(v) is str and v in ("same", "valid"))


def _output_size(v: Any) -> bool:
    return v is None or _is_int(v) or (type(v) is list and all(x is None or _is_int(x) for x in v))


def _floats(v: Any) -> bool:
    return _float(v) or (type(v) is list and all(_float(x) for x in v))


Check = Callable[[Any], bool]
_INPLACE: dict[str, Check] = {"inplace": _bool}
_POOL: dict[str, Check] = {"kernel_size": _ints, "stride": _optional(_ints), "padding": _ints}
_NORM: dict[str, Check] = {"num_features": _int, "eps": _float, "momentum": _optional(_float),
                           "affine": _bool, "track_running_stats": _bool, "bias": _bool}
_DROPOUT: dict[str, Check] = {"p": _float, "inplace": _bool}

# saved type name -> (class, {constructor argument: type check}); nothing else is built.
MODULES: dict[str, tuple[type[nn.Module], dict[str, Check]]] = {
    "torch.nn.Conv2d": (nn.Conv2d, {
        "in_channels": _int, "out_channels": _int, "kernel_size": _ints, "stride": _ints,
        "padding": _padding, "dilation": _ints, "groups": _int, "bias": _bool,
        "padding_mode": _choice("zeros", "reflect", "replicate", "circular")}),
    "torch.nn.Linear": (nn.Linear, {"in_features": _int, "out_features": _int, "bias": _bool}),
    "torch.nn.BatchNorm1d": (nn.BatchNorm1d, _NORM),
    "torch.nn.BatchNorm2d": (nn.BatchNorm2d, _NORM),
    "torch.nn.GroupNorm": (nn.GroupNorm, {"num_groups": _int, "num_channels": _int, "eps": _float,
                                          "affine": _bool, "bias": _bool}),
    **{f"torch.nn.{c.__name__}": (c, _INPLACE) for c in (
        nn.ReLU, nn.ReLU6, nn.SELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid)},
    "torch.nn.LeakyReLU": (nn.LeakyReLU, {"negative_slope": _float, "inplace": _bool}),
    "torch.nn.ELU": (nn.ELU, {"alpha": _float, "inplace": _bool}),
    "torch.nn.CELU": (nn.CELU, {"alpha": _float, "inplace": _bool}),
    "torch.nn.GELU": (nn.GELU, {"approximate": _choice("none", "tanh")}),
    "torch.nn.Hardtanh": (nn.Hardtanh, {"min_val": _float, "max_val": _float, "inplace": _bool}),
    "torch.nn.Softplus": (nn.Softplus, {"beta": _float, "threshold": _float}),
    **{f"torch.nn.{c.__name__}": (c, {}) for c in (nn.Sigmoid, nn.Tanh, nn.Identity)},
    **{f"torch.nn.{c.__name__}": (c, _DROPOUT) for c in (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)},
    "torch.nn.MaxPool2d": (nn.MaxPool2d, {**_POOL, "dilation": _ints, "return_indices": _bool,
                                          "ceil_mode": _bool}),
    "torch.nn.AvgPool2d": (nn.AvgPool2d, {**_POOL, "ceil_mode": _bool, "count_include_pad": _bool,
                                          "divisor_override": _optional(_int)}),
    "torch.nn.AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, {"output_size": _output_size}),
    "torch.nn.AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, {"output_size": _output_size,
                                                          "return_indices": _bool}),
    "torch.nn.Upsample": (nn.Upsample, {
        "size": _optional(_ints), "scale_factor": _optional(_floats),
        "mode": _choice("nearest", "linear", "bilinear", "bicubic", "trilinear", "nearest-exact"),
        "align_corners": _optional(_bool), "recompute_scale_factor": _optional(_bool)}),
    "torch.nn.Flatten": (nn.Flatten, {"start_dim": _int, "end_dim": _int}),
    "torch.nn.Softmax": (nn.Softmax, {"dim": _optional(_int)}),
    "torch.nn.LogSoftmax": (nn.LogSoftmax, {"dim": _optional(_int)}),
    # the exporter's own helpers (constants.py); the saved name predates the package split
    "asfp_explorer.export.Expand": (Expand, {"channels": _int, "kept_count": _int}),
    "asfp_explorer.export.ScatterAdd": (ScatterAdd, {"channels": _int, "kept_count": _int,
                                                     "has_values": _bool}),
    "asfp_explorer.export.ScatterAddInPlace": (ScatterAddInPlace, {  # fuse.py
        "channels": _int, "kept_count": _int, "pruned_count": _int}),
    "asfp_explorer.export.ConstantInputMap": (ConstantInputMap, {
        "out_channels": _int, "kernel_size": _pair, "stride": _pair, "padding": _pair,
        "dilation": _pair, "cached_size": _pair}),
}
_MODULE_NAMES: dict[type, str] = {cls: name for name, (cls, _) in MODULES.items()}


def module_type_name(module: nn.Module, where: str) -> str:
    """The vocabulary name of `module`'s exact type (for saving)."""
    name = _MODULE_NAMES.get(type(module))
    if name is None:
        cls = type(module)
        raise CompactFormatError(f"{where}: module type {cls.__module__}.{cls.__name__} is not in "
                                 f"the compact vocabulary; allowed: {', '.join(sorted(MODULES))}")
    return name


def check_module(type_name: Any, args: Any, where: str) -> type[nn.Module]:
    """The class of a saved module, after checking every constructor argument's type."""
    if not isinstance(type_name, str) or type_name not in MODULES:
        raise CompactFormatError(f"{where}: module type {type_name!r} is not allowed; allowed: "
                                 f"{', '.join(sorted(MODULES))}")
    cls, schema = MODULES[type_name]
    if not isinstance(args, Mapping):
        raise CompactFormatError(f"{where}: constructor arguments of {type_name} must be a dict")
    for key, value in args.items():
        if key not in schema:
            raise CompactFormatError(f"{where}: {type_name} argument {key!r} is not allowed; "
                                     f"allowed: {', '.join(schema) or 'none'}")
        if not schema[key](value):
            raise CompactFormatError(f"{where}: {type_name} argument {key}={value!r} has the wrong "
                                     "type or value")
    return cls

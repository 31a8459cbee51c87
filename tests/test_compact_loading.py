"""Loading a compact model never runs code: crafted files are refused, and a marker file
that each payload tries to create never appears (docs/compact_format.md)."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from asfp_explorer.export import CompactFormatError, compact, load_compact, save_compact
from asfp_explorer.export.serialise import _constructor_args
from asfp_explorer.export.vocabulary import MODULES, check_module
from asfp_explorer.models import build_model


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict:
    """The payload of a real compact ResNet-20 (pruned, so it holds every helper module)."""
    model = build_model("resnet20")
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(m.out_channels, generator=g) > 0.4 for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and n.endswith("conv1")}
    path = tmp_path_factory.mktemp("compact") / "c.pt"
    save_compact(compact(model, masks, (3, 32, 32)), path)
    return torch.load(path, weights_only=True)


def node(name, op, target, args=(), kwargs=None):
    """A graph entry as the file stores it; `args` and `kwargs` values are already encoded
    (plain values, or `ref(...)` for a node)."""
    return {"name": name, "op": op, "target": target, "args": {"tuple": list(args)},
            "kwargs": {"dict": kwargs or {}}}


def ref(name: str) -> dict:
    return {"node": name}


def with_graph(payload: dict, extra: list[dict], output: str | None = None) -> dict:
    """`payload` with `extra` nodes inserted before the output (which returns `output`)."""
    p = copy.deepcopy(payload)
    graph = p["architecture"]["graph"]
    out = graph.pop()
    if output is not None:
        out = {**out, "args": {"tuple": [ref(output)]}}
    graph.extend(extra)
    graph.append(out)
    return p


def refused(payload: dict, tmp_path: Path, match: str) -> None:
    """Saving `payload` and loading it raises CompactFormatError (one line matching `match`)
    and leaves no marker file behind, neither at load nor when the result would be called."""
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    with pytest.raises(CompactFormatError, match=match) as info:
        model = load_compact(path)
        model(torch.randn(1, 3, 32, 32))  # only reached if loading wrongly succeeded
    assert "\n" not in str(info.value)
    assert not (tmp_path / "marker").exists()


def shell(tmp_path: Path) -> str:
    return f"touch {tmp_path / 'marker'}"


def test_genuine_file_loads(genuine, tmp_path):
    torch.save(genuine, tmp_path / "c.pt")
    out = load_compact(tmp_path / "c.pt")(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_getattr_chain_to_os_system(genuine, tmp_path):
    # x.__class__.__reduce_ex__.__globals__["__builtins__"]["__import__"]("os").system(...)
    chain = [node("a", "call_function", "builtins.getattr", (ref("x"), "__class__")),
             node("b", "call_function", "builtins.getattr", (ref("a"), "__reduce_ex__")),
             node("c", "call_function", "builtins.getattr", (ref("b"), "__globals__")),
             node("d", "call_function", "operator.getitem", (ref("c"), "__builtins__")),
             node("e", "call_function", "operator.getitem", (ref("d"), "__import__")),
             node("f", "call_function", "operator.call", (ref("e"), "os")),
             node("g", "call_function", "builtins.getattr", (ref("f"), "system")),
             node("h", "call_function", "operator.call", (ref("g"), shell(tmp_path)))]
    refused(with_graph(genuine, chain, "h"), tmp_path, r"node 'a': getattr is allowed only as")


def test_getattr_of_a_tensor_attribute_outside_the_set(genuine, tmp_path):
    chain = [node("a", "call_function", "builtins.getattr", (ref("x"), "data"))]
    refused(with_graph(genuine, chain, "a"), tmp_path, r"node 'a': getattr is allowed only as")


@pytest.mark.parametrize("fn,args", [
    ("operator.attrgetter", ("__class__.__init__.__globals__",)),
    ("operator.methodcaller", ("system", "MARKER")),
    ("operator.call", ("MARKER",)),
    ("builtins.eval", ("__import__('os').system('MARKER')",)),
    ("torch.save", ("MARKER",)),
    ("os.system", ("MARKER",)),
])
def test_functions_outside_the_vocabulary(genuine, tmp_path, fn, args):
    args = tuple(a.replace("MARKER", shell(tmp_path)) for a in args)
    chain = [node("a", "call_function", fn, args), node("b", "call_method", "__call__", (ref("a"), ref("x")))]
    refused(with_graph(genuine, chain, "b"), tmp_path, f"node 'a': function '{fn}' is not allowed")


@pytest.mark.parametrize("method", ["__call__", "__reduce_ex__", "apply_", "register_hook", "numpy",
                                    "relu(); __import__('os').system('MARKER'); x.relu"])
def test_methods_outside_the_vocabulary(genuine, tmp_path, method):
    chain = [node("a", "call_method", method.replace("MARKER", shell(tmp_path)), (ref("x"),))]
    refused(with_graph(genuine, chain, "a"), tmp_path, "node 'a': tensor method .* is not allowed")


@pytest.mark.parametrize("declare", [False, True])
def test_dunder_get_attr_target(genuine, tmp_path, declare):
    p = with_graph(genuine, [node("a", "get_attr", "__class__")], "a")
    if declare:
        p["architecture"]["attributes"]["__class__"] = {"kind": "buffer", "shape": [1], "dtype": "float32"}
    match = "'__class__' is not allowed" if declare else "node 'a': get_attr target '__class__'"
    refused(p, tmp_path, match)


def test_attribute_path_through_a_dunder(genuine, tmp_path):
    p = with_graph(genuine, [node("a", "get_attr", "conv1.__dict__")], "a")
    p["architecture"]["attributes"]["conv1.__dict__"] = {"kind": "buffer", "shape": [1], "dtype": "float32"}
    refused(p, tmp_path, "'conv1.__dict__' is not allowed")


def test_kwargs_key_injecting_code(genuine, tmp_path):
    key = f"dim=__import__('os').system({shell(tmp_path)!r}) or 1, keepdim"
    chain = [node("a", "call_method", "sum", (ref("x"),), {key: False})]
    refused(with_graph(genuine, chain, "a"), tmp_path, "node 'a': keyword argument .* is not allowed")


def test_dict_argument_key_injecting_code(genuine, tmp_path):
    p = with_graph(genuine, [node("a", "call_function", "torch.flatten", (ref("x"),))], "a")
    p["architecture"]["graph"][-2]["args"] = {"tuple": [ref("x"), {"dict": {
        f"__import__('os').system({shell(tmp_path)!r})": 1}}]}
    refused(p, tmp_path, "node 'a': dict key .* is not allowed")


@pytest.mark.parametrize("where", ["argument", "model", "attribute"])
@pytest.mark.parametrize("name", ["save", "load", "__class__", "Tensor", "float128"])
def test_unknown_dtype_name(genuine, tmp_path, where, name):
    p = copy.deepcopy(genuine)
    if where == "argument":
        p = with_graph(genuine, [node("a", "call_method", "sum", (ref("x"),), {"dtype": {"dtype": "float32"}})], "a")
        p["architecture"]["graph"][-2]["kwargs"]["dict"]["dtype"] = {"dtype": name}
    elif where == "model":
        p["architecture"]["dtype"] = name
    else:
        p = with_graph(genuine, [node("a", "get_attr", "extra")], "a")
        p["architecture"]["attributes"]["extra"] = {"kind": "buffer", "shape": [1], "dtype": name}
    refused(p, tmp_path, f"dtype '{name}' is not allowed")


def test_unknown_memory_format(genuine, tmp_path):
    p = with_graph(genuine, [node("a", "call_method", "contiguous", (ref("x"),))], "a")
    p["architecture"]["graph"][-2]["kwargs"] = {"dict": {"memory_format": {"memory_format": "save"}}}
    refused(p, tmp_path, "memory format 'save' is not allowed")


@pytest.mark.parametrize("type_name,args", [
    ("subprocess.Popen", {"args": "MARKER", "shell": True}),
    ("torch.nn.Module", {}),
    ("torch.nn.Bilinear", {"in1_features": 2, "in2_features": 2, "out_features": 2}),
    ("asfp_explorer.export.rewrite._Rewrite", {}),
])
def test_module_type_outside_the_set(genuine, tmp_path, type_name, args):
    p = copy.deepcopy(genuine)
    args = {k: v.replace("MARKER", shell(tmp_path)) if isinstance(v, str) else v for k, v in args.items()}
    p["architecture"]["modules"]["conv1"] = {"type": type_name, "args": args}
    refused(p, tmp_path, f"module 'conv1': module type '{type_name}' is not allowed")


@pytest.mark.parametrize("args,match", [
    ({"in_channels": "3", "out_channels": 16, "kernel_size": 3}, "in_channels='3' has the wrong type"),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": [3, "x"]}, "kernel_size=.* has the wrong type"),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding_mode": "os"}, "padding_mode='os'"),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "device": "cuda"}, "argument 'device' is not allowed"),
    ({"in_channels": True, "out_channels": 16, "kernel_size": 3}, "in_channels=True has the wrong type"),
])
def test_module_constructor_arguments_are_type_checked(genuine, tmp_path, args, match):
    p = copy.deepcopy(genuine)
    p["architecture"]["modules"]["conv1"] = {"type": "torch.nn.Conv2d", "args": args}
    refused(p, tmp_path, match)


def test_huge_declared_sizes_allocate_nothing(genuine, tmp_path):
    # modules are built on the meta device: a 2**40-channel conv costs no memory, and the
    # state_dict that does not match it is refused
    p = copy.deepcopy(genuine)
    p["architecture"]["modules"]["conv1"]["args"]["out_channels"] = 2 ** 40
    refused(p, tmp_path, "state_dict entry 'conv1.weight' is not a torch.float32 tensor of shape")


@pytest.mark.parametrize("field,value", [
    ("name", "x; __import__('os').system('MARKER')"),
    ("name", "__import__"),
    ("name", "torch"),
    ("name", "self"),
    ("name", "class"),
    ("placeholder", "x=__import__('os').system('MARKER')"),
    ("placeholder", "*args"),
    ("module", 'conv1")\n__import__("os").system("MARKER")#'),
])
def test_generated_source_holds_only_identifiers(genuine, tmp_path, field, value):
    value = value.replace("MARKER", shell(tmp_path))
    p = copy.deepcopy(genuine)
    graph = p["architecture"]["graph"]
    if field == "name":
        p = with_graph(genuine, [node(value, "call_method", "relu", (ref("x"),))], value)
    elif field == "placeholder":
        graph[0]["target"] = value
    else:
        conv = next(e for e in graph if e["op"] == "call_module")
        p["architecture"]["modules"][value] = p["architecture"]["modules"][conv["target"]]
        conv["target"] = value
    refused(p, tmp_path, "is not allowed|is not a module the file declares")


def test_argument_types_outside_plain_data(genuine, tmp_path):
    p = with_graph(genuine, [node("a", "call_method", "sum", (ref("x"),))], "a")
    p["architecture"]["graph"][-2]["args"] = {"tuple": [ref("x"), torch.tensor([1])]}
    refused(p, tmp_path, "argument of type Tensor is not allowed")


def test_a_pickled_object_is_refused(tmp_path):
    import os

    class Boom:
        def __reduce__(self):
            return (os.system, (shell(tmp_path),))

    torch.save({"format": "asfp-explorer/compact-v1", "architecture": Boom(), "state_dict": {}},
               tmp_path / "crafted.pt")
    with pytest.raises(CompactFormatError, match="cannot be read as plain data"):
        load_compact(tmp_path / "crafted.pt")
    assert not (tmp_path / "marker").exists()


def test_cli_turns_the_error_into_exit_2(tmp_path, monkeypatch, capsys):
    from asfp_explorer import cli
    from asfp_explorer.commands import export as export_command

    def failing(args):
        raise CompactFormatError("save_compact: node 'a': function os.system is not in the compact vocabulary")

    monkeypatch.setattr(export_command, "run", failing)  # bound when the parser is built
    assert cli.main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "function os.system is not in the compact vocabulary" in err and err.count("\n") == 1


@pytest.mark.parametrize("type_name", sorted(MODULES))
def test_every_vocabulary_module_round_trips(type_name):
    """What save_compact reads back from a default instance passes the loader's type checks."""
    cls, schema = MODULES[type_name]
    required = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "in_features": 4, "out_features": 4,
                "num_features": 4, "num_groups": 2, "num_channels": 4, "output_size": 1, "channels": 4,
                "kept_count": 2, "has_values": True, "stride": 1, "padding": 1, "dilation": 1}
    if cls.__name__ == "ConstantInputMap":
        required.update(kernel_size=[3, 3], stride=[1, 1], padding=[1, 1], dilation=[1, 1])
    params = inspect.signature(cls.__init__).parameters
    module = cls(**{k: required.get(k, 2) for k, p in params.items()
                    if k != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)})
    args = _constructor_args(module, "test")
    assert check_module(type_name, args, "test") is cls
    rebuilt = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}


ODD_VALUES = [None, [], 2.5, "__x", {"node": []}, {"dtype": ["float32"]}, {"a": 1, "b": 2}]


def test_odd_values_anywhere_get_the_one_line_error(genuine, tmp_path):
    """Every field of a sample of nodes, modules and attributes replaced by odd plain data:
    the file loads or is refused with CompactFormatError, never another exception."""
    import random

    rng = random.Random(0)
    arch = genuine["architecture"]
    cases = [("graph", i, field) for i in rng.sample(range(len(arch["graph"])), 3)
             for field in ("name", "op", "target", "args", "kwargs")]
    cases += [("modules", name, field) for name in rng.sample(sorted(arch["modules"]), 2) for field in ("type", "args")]
    cases += [("top", key, None) for key in arch]
    for section, key, field in cases:
        for value in ODD_VALUES:
            p = copy.deepcopy(genuine)
            a = p["architecture"]
            if section == "top":
                a[key] = value
            else:
                a[section][key][field] = value
            path = tmp_path / "odd.pt"
            torch.save(p, path)
            try:
                load_compact(path)
            except CompactFormatError as e:
                assert "\n" not in str(e)

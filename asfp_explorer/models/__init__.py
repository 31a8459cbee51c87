"""Model builders (built-in, registered, or `package.module:factory`) and the prunable-layer rule.

A model says which of its convs are prunable (spec §3) through a method
`prunable_conv_names() -> list[str]`, so pruning code never counts parameter indices. A user's
own model without that method is traced with torch.fx instead (models/tracing.py).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from torch import nn

from .. import model_registry
from .cifar_resnet import CifarResNet
from .torchvision_resnets import SPECS as TORCHVISION_DEPTHS
from .torchvision_resnets import TorchvisionResNet

# Built-in name -> builder(num_classes, in_channels); model_registry.py holds the names (no torch).
_BUILT_IN: dict[str, Callable[[int, int], nn.Module]] = {
    **{f"resnet{d}": partial(CifarResNet, d) for d in (20, 32, 56, 110)},
    **{f"resnet{d}": partial(TorchvisionResNet, d) for d in TORCHVISION_DEPTHS},
}


def model_names() -> list[str]:
    """Plain names accepted by `build_model`: the built-ins, then those added by
    `register_model` (a `package.module:factory` reference is accepted too)."""
    return list(model_registry.names())


def register_model(name: str, builder: Callable[[int, int], nn.Module]) -> None:
    """Add a model builder `(num_classes, in_channels) -> nn.Module` under `name`.

    The name then works in this process wherever a model name does: `RunConfig`, the
    dashboard's model menu, train, study, export and resume. For the command line and YAML
    files (a fresh process), name the builder as `package.module:factory` instead.
    """
    model_registry.register(name, builder)


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model: built-in, registered, or a `package.module:factory`."""
    builder = _BUILT_IN.get(name) or model_registry.registered_builder(name)
    if builder is None:
        if not model_registry.is_reference(name):
            model_registry.check(name)  # raises the one-line ConfigError naming what is allowed
        builder = model_registry.resolve_reference(name)
    model = builder(num_classes, in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r}: the builder returned {type(model).__name__}, "
                        "not an nn.Module")
    return model


def prunable_layers(model: nn.Module, input_size: Sequence[int] | None = None) -> dict[str, nn.Conv2d]:
    """Prunable convs of `model` by qualified name, in forward order.

    The model's own `prunable_conv_names()` decides when it has one (spec §3 for the built-in
    ResNets); otherwise torch.fx finds them (`tracing.find_prunable_layers`), probing with
    `input_size` (C, H, W), or (C of the first conv, 32, 32) when it is not given.
    """
    modules = dict(model.named_modules())
    if hasattr(model, "prunable_conv_names"):
        names = list(model.prunable_conv_names())
    else:
        from .tracing import find_prunable_layers, guess_input_size

        size = tuple(input_size) if input_size is not None else guess_input_size(model)
        names, _ = find_prunable_layers(model, size)
    for name in names:
        if not isinstance(modules.get(name), nn.Conv2d):
            raise TypeError(f"prunable layer {name!r} of {type(model).__name__} is not an nn.Conv2d "
                            "submodule; prunable_conv_names() must name Conv2d modules")
    return {name: modules[name] for name in names}

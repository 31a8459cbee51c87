"""Model registry and the prunable-layer rule.

A model says which of its convs are prunable (spec §3) through a method
`prunable_conv_names() -> list[str]`, so pruning code never counts parameter indices.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .cifar_resnet import CifarResNet

# name -> builder(num_classes, in_channels)
_REGISTRY: dict[str, Callable[[int, int], nn.Module]] = {
    f"resnet{d}": (lambda d: lambda num_classes, in_channels: CifarResNet(d, num_classes, in_channels))(d)
    for d in (20, 32, 56, 110)
}


def model_names() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(_REGISTRY)


def register_model(name: str, builder: Callable[[int, int], nn.Module]) -> None:
    """Add a model builder `(num_classes, in_channels) -> nn.Module` under `name`."""
    _REGISTRY[name] = builder


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model from the registry."""
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown {name!r}; allowed: {', '.join(model_names())}")
    return _REGISTRY[name](num_classes, in_channels)


def prunable_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Prunable convs of `model` by qualified name, in forward order."""
    if not hasattr(model, "prunable_conv_names"):
        raise TypeError(
            f"{type(model).__name__} has no prunable_conv_names(); "
            "see docs on marking prunable layers"
        )
    modules = dict(model.named_modules())
    return {name: modules[name] for name in model.prunable_conv_names()}

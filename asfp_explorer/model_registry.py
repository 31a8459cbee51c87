"""Which names `model.name` accepts, without importing torch.

A model name is one of
- a built-in ResNet (`BUILT_IN`: the CIFAR ResNets of spec §3 and torchvision's ImageNet ones),
- a name added in this process by `asfp_explorer.models.register_model`,
- a reference `package.module:factory` to a builder `factory(num_classes, in_channels) ->
  nn.Module`, importable where the model is built (train, study, export, resume).

A config checks a name's spelling only (`check_spelling`): a stored run of a model registered
in another process still loads (show, report, replay), and loading never imports anything.
Whether the name is known is checked where a model is built or a new run starts (`check`,
with a one-line error listing what is registered); a reference's module is imported then.
"""

from __future__ import annotations

import importlib
import re
import threading
from typing import Any, Callable

BUILT_IN = ("resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50",
            "resnet101")
_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_PLAIN = re.compile(r"[A-Za-z0-9_][\w.-]*")

_lock = threading.Lock()
_registered: dict[str, Callable[..., Any]] = {}  # name -> builder(num_classes, in_channels)


def _error(message: str) -> Exception:
    from .config import ConfigError  # config imports this module; ConfigError -> CLI exit 2

    return ConfigError(message)


def is_reference(name: str) -> bool:
    """Whether `name` is spelled `package.module:factory`."""
    return isinstance(name, str) and _REFERENCE.fullmatch(name) is not None


def register(name: str, builder: Callable[..., Any]) -> None:
    """Add `builder(num_classes, in_channels) -> nn.Module` under `name` (replaces an earlier one)."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name):
        raise _error(f"model name {name!r} is not allowed; use letters, digits, _ . -")
    if name in BUILT_IN:
        raise _error(f"model name {name!r} is built in; choose another name")
    if not callable(builder):
        raise TypeError(f"register_model({name!r}, ...): the builder must be callable")
    with _lock:
        _registered[name] = builder


def registered_builder(name: str) -> Callable[..., Any] | None:
    """The builder added under `name` by `register`, or None."""
    with _lock:
        return _registered.get(name)


def names() -> tuple[str, ...]:
    """Every accepted plain name: the built-ins in their order, then registered ones."""
    with _lock:
        return BUILT_IN + tuple(sorted(_registered))


def allowed_text() -> str:
    """What `model.name` accepts, for one-line errors."""
    return (f"allowed: {', '.join(names())} (register_model adds names), "
            "or a package.module:factory reference")


def check(name: Any) -> None:
    """Raise ConfigError naming what is allowed unless `name` is accepted."""
    if isinstance(name, str) and (name in names() or is_reference(name)):
        return
    raise _error(f"model.name: {name!r} is not allowed; {allowed_text()}")


def check_spelling(name: Any) -> None:
    """Raise ConfigError unless `name` could name a model: letters, digits, _ . - (a built-in or
    registered name, maybe registered in another process), or `package.module:factory`."""
    if isinstance(name, str) and (_PLAIN.fullmatch(name) or is_reference(name)):
        return
    raise _error(f"model.name: {name!r} is not allowed; {allowed_text()}")


def resolve_reference(name: str) -> Callable[..., Any]:
    """Import `package.module` and return its `factory` (one-line ConfigError otherwise)."""
    if not is_reference(name):
        raise _error(f"model.name: {name!r} is not a package.module:factory reference")
    module_name, attr = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises while importing
        first = (str(e).strip().splitlines() or [""])[0]
        raise _error(f"model.name: cannot import {module_name!r} "
                             f"({type(e).__name__}: {first})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise _error(f"model.name: {module_name!r} has no callable {attr!r}")
    return factory

"""Run configuration: frozen dataclasses, to/from dict and YAML, validated where they enter.

No torch import here: the dashboard's sliders and the command line validate without it. Every
error is one line that names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping

from .schedules import D_MAX, SCHEDULES

# CIFAR ResNets (spec §3) and torchvision's ImageNet ResNets (registered in models/).
MODELS = ("resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50", "resnet101")
DATASETS = ("digits", "cifar10", "npz")
# method -> (schedule, mode). "hard" holds pruned filters at zero; "soft" lets them revive.
METHODS = {
    "asfp": ("asymptotic", "soft"),
    "sfp": ("constant", "soft"),
    "hard-asfp": ("asymptotic", "hard"),
    "hard-sfp": ("constant", "hard"),
    "linear": ("linear", "soft"),
    "cubic": ("cubic", "soft"),
}
CRITERIA = ("l2", "l1", "fpgm", "fpgm-mix")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message is one line."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}: {value!r} is not allowed; {allowed}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "expected a positive integer")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(name, value, "expected a finite number")
    return float(value)


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        _fail(name, value, f"allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class DataConfig:
    """Which data set and how it is batched. `path`: the CIFAR-10 root or the .npz file."""

    name: str = "digits"
    path: str | None = None
    batch_size: int = 128
    augment: bool = True  # random crop + flip (spec §8); ignored for digits
    download: bool = True  # cifar10 only: download into `path` when missing and online

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        _positive_int("data.batch_size", self.batch_size)
        if self.name == "npz" and not self.path:
            _fail("data.path", self.path, "the npz data set needs the path of an .npz file")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet20"

    def __post_init__(self) -> None:
        _choice("model.name", self.name, MODELS)


@dataclass(frozen=True)
class PruningConfig:
    """What is pruned and when. `prune_ratio` is the fraction of filters zeroed (never kept)."""

    method: str = "asfp"
    prune_ratio: float = 0.4
    d: float = 0.125  # asymptotic only: P(d * epochs) = 3/4 prune_ratio
    interval: int = 1  # epochs between mask updates; the last epoch always updates
    criterion: str = "l2"
    fpgm_norm_share: float = 0.5  # fpgm-mix: share of the pruned filters picked by norm

    def __post_init__(self) -> None:
        _choice("pruning.method", self.method, tuple(METHODS))
        p = _number("pruning.prune_ratio", self.prune_ratio)
        if not 0.0 <= p < 1.0:
            _fail("pruning.prune_ratio", self.prune_ratio, "expected a number in [0, 1)")
        d = _number("pruning.d", self.d)
        if not 0.0 < d < D_MAX:
            _fail("pruning.d", self.d, "expected a number in (0, 0.75); the asymptotic "
                  "schedule has no solution for D >= 0.75 (default 0.125)")
        _positive_int("pruning.interval", self.interval)
        _choice("pruning.criterion", self.criterion, CRITERIA)
        s = _number("pruning.fpgm_norm_share", self.fpgm_norm_share)
        if not 0.0 <= s <= 1.0:
            _fail("pruning.fpgm_norm_share", self.fpgm_norm_share, "expected a number in [0, 1]")

    @property
    def schedule(self) -> str:
        return METHODS[self.method][0]

    @property
    def mode(self) -> str:
        """'soft' or 'hard'."""
        return METHODS[self.method][1]


@dataclass(frozen=True)
class TrainingConfig:
    """SGD recipe of spec §8, scaled to `epochs`: lr x lr_gamma at the given fractions of epochs."""

    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_gamma: float = 0.2
    lr_milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # 60, 120, 160 of 200 epochs
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_int("training.epochs", self.epochs)
        if _number("training.lr", self.lr) <= 0:
            _fail("training.lr", self.lr, "expected a positive number")
        m = _number("training.momentum", self.momentum)
        if not 0.0 <= m < 1.0:
            _fail("training.momentum", self.momentum, "expected a number in [0, 1)")
        if _number("training.weight_decay", self.weight_decay) < 0:
            _fail("training.weight_decay", self.weight_decay, "expected a number >= 0")
        g = _number("training.lr_gamma", self.lr_gamma)
        if not 0.0 < g <= 1.0:
            _fail("training.lr_gamma", self.lr_gamma, "expected a number in (0, 1]")
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        for x in self.lr_milestones:
            if not 0.0 < _number("training.lr_milestones", x) < 1.0:
                _fail("training.lr_milestones", self.lr_milestones,
                      "expected fractions of the epochs in (0, 1)")
        _choice("training.device", self.device, DEVICES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail("training.seed", self.seed, "expected an integer >= 0")

    def milestone_epochs(self) -> list[int]:
        """Epoch indices at which the learning rate is multiplied by lr_gamma."""
        return sorted({max(1, round(f * self.epochs)) for f in self.lr_milestones})


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Build from nested dicts; unknown sections or keys are refused."""
        return _from_dict(cls, d, "")

    def with_changes(self, **sections: Mapping[str, Any]) -> "RunConfig":
        """A copy with some fields changed, e.g. `with_changes(pruning={"d": 0.25})`."""
        out = self
        for section, changes in sections.items():
            if section not in {f.name for f in fields(self)}:
                _fail("config", section, "allowed sections: data, model, pruning, training")
            current = getattr(out, section)
            merged = _from_dict(type(current), {**dataclasses.asdict(current), **changes}, section + ".")
            out = replace(out, **{section: merged})
        return out

    def to_yaml(self) -> str:
        import yaml

        d = self.to_dict()
        d["training"]["lr_milestones"] = list(d["training"]["lr_milestones"])
        return yaml.safe_dump(d, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "RunConfig":
        import yaml

        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            _fail("config", d, "expected a mapping with sections data, model, pruning, training")
        return cls.from_dict(d)


def _from_dict(cls, d: Any, prefix: str):
    if not isinstance(d, Mapping):
        _fail(prefix.rstrip(".") or "config", d, "expected a mapping")
    known = {f.name: f for f in fields(cls)}
    for key in d:
        if key not in known:
            _fail(f"{prefix}{key}", d[key], f"unknown field; allowed: {', '.join(known)}")
    kwargs = {}
    for name, value in d.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # wrong kinds of values that the dataclass itself rejects
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None

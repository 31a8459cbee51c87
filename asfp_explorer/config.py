"""Run configuration: frozen dataclasses, to/from dict and YAML, validated where they enter.

No torch import here: the dashboard's sliders and the command line validate without it. Every
error is one line that names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping

from . import model_registry
from .schedules import D_MAX

# Built-in models: CIFAR ResNets (spec §3) and torchvision's ImageNet ResNets. `model.name`
# also accepts names added by `register_model` and `package.module:factory` references.
MODELS = model_registry.BUILT_IN
DATASETS = ("digits", "cifar10", "npz", "imagefolder")
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
PRECISIONS = ("fp32", "bf16")


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
    train_subset: int = 0  # > 0: train on the first N images, class-balanced (data.py); 0 = all
    # imagefolder only (train/ and val/ of class folders, read from disk while training):
    image_size: int = 224  # pixels of the training crop (spec §8: 224; val: resize 256/224 of it)
    workers: int = 4  # DataLoader worker processes decoding images (0: in the training process)

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) \
                or not 8 <= self.image_size <= 4096:
            _fail("data.image_size", self.image_size, "expected an integer in [8, 4096] "
                  "(224 for ImageNet, spec §8)")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or not 0 <= self.workers <= 256:
            _fail("data.workers", self.workers, "expected an integer in [0, 256]")
        if self.name == "imagefolder" and not self.path:
            _fail("data.path", self.path, "the imagefolder data set needs the folder that "
                  "holds train/ and val/")
        _positive_int("data.batch_size", self.batch_size)
        t = self.train_subset
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            _fail("data.train_subset", t, "expected an integer >= 0 (0 = every training image)")
        if self.name == "npz" and not self.path:
            _fail("data.path", self.path, "the npz data set needs the path of an .npz file")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet20"
    # A state_dict file (torch.save of model.state_dict()) to start from: the papers'
    # "pretrained" variant (train it with lr / 10, spec §8). None: from scratch (the default).
    weights: str | None = None

    def __post_init__(self) -> None:
        # Spelling only: a stored run of a model registered in another process must load.
        # Unknown names are refused, listing the known ones, where a run starts or a model is built.
        model_registry.check_spelling(self.name)
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            _fail("model.weights", self.weights, "expected the path of a state_dict file or null")


@dataclass(frozen=True)
class PruningConfig:
    """What is pruned and when. `prune_ratio` is the fraction of filters zeroed (never kept)."""

    method: str = "asfp"
    prune_ratio: float = 0.4
    d: float = 0.125  # asymptotic only: P(d * epochs) = 3/4 prune_ratio
    interval: int = 1  # epochs between mask updates; the last epoch always updates
    criterion: str = "l2"
    # fpgm-mix: share of the pruned filters picked by norm (FPGM paper: 10 % of 40 % = 0.25)
    fpgm_norm_share: float = 0.25
    # Set by the trainer when `training.epochs` changes during a run: the scheduled ratio
    # already reached, below which the new schedule never falls (0 in a new run; docs/schedules.md).
    ratio_reached: float = 0.0
    # Remedies beyond the paper (opt-in; the defaults are the paper's method):
    adaptive_bn_batches: int = 0  # > 0: after each mask, re-estimate BN statistics from N batches
    mask_bn: bool = False  # zero BN gamma and beta of pruned channels together with the filter
    # Extension beyond the paper (opt-in; 1 = the paper's floor(N P)): round each layer's pruned
    # count so kept widths are multiples of this (pruning/widths.py has the rule), e.g. 8.
    width_multiple: int = 1

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
        r = _number("pruning.ratio_reached", self.ratio_reached)
        if not 0.0 <= r < 1.0:
            _fail("pruning.ratio_reached", self.ratio_reached, "expected a number in [0, 1)")
        n = self.adaptive_bn_batches
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            _fail("pruning.adaptive_bn_batches", n, "expected an integer in [0, 10000] "
                  "(0 = off, the paper's method)")
        if not isinstance(self.mask_bn, bool):
            _fail("pruning.mask_bn", self.mask_bn, "expected true or false")
        m = self.width_multiple
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 1024:
            _fail("pruning.width_multiple", m, "expected an integer in [1, 1024] (1 = the paper's "
                  "counts; 8 = kept widths in multiples of 8)")

    @property
    def schedule(self) -> str:
        return METHODS[self.method][0]

    @property
    def mode(self) -> str:
        """'soft' or 'hard'."""
        return METHODS[self.method][1]

    @property
    def remedies(self) -> tuple[str, ...]:
        """Names of the opt-in remedies switched on (empty for the paper's method)."""
        return ((("adaptive-bn",) if self.adaptive_bn_batches else ())
                + (("mask-bn",) if self.mask_bn else ()))


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
    # Learning rate of the first epoch only; None = the papers' recipe (spec §8): lr / 10
    # (0.01 at lr 0.1) for resnet110, `lr` for every other model. Set it to `lr` to switch off.
    first_epoch_lr: float | None = None
    # Set by the trainer when `epochs` changes during a run: learning-rate decays already
    # applied, which the new milestones never undo (0 in a new run; docs/schedules.md).
    lr_decays_reached: int = 0
    device: str = "auto"
    seed: int = 0
    # Options beyond the paper's recipe (opt-in; the defaults are the paper's fp32 method):
    eval_unmasked: bool = True  # False: skip the evaluation before each mask (no unmasked curve)
    precision: str = "fp32"  # "bf16": autocast forward passes to bfloat16 (fast on recent GPUs)
    channels_last: bool = False  # NHWC memory format for model and batches (faster convs on GPU)
    compile: bool = False  # torch.compile the training forward pass (slow start, faster epochs)
    # torchrun only: SyncBatchNorm across ranks (CUDA); False = per-rank BN statistics, as the
    # authors' DataParallel runs computed them (engine/distributed.py).
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        _positive_int("training.epochs", self.epochs)
        _choice("training.precision", self.precision, PRECISIONS)
        for flag in ("eval_unmasked", "channels_last", "compile", "sync_batchnorm"):
            if not isinstance(getattr(self, flag), bool):
                _fail(f"training.{flag}", getattr(self, flag), "expected true or false")
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
        if self.first_epoch_lr is not None and _number("training.first_epoch_lr",
                                                       self.first_epoch_lr) <= 0:
            _fail("training.first_epoch_lr", self.first_epoch_lr,
                  "expected a positive number, or null for the papers' recipe")
        n = self.lr_decays_reached
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self.lr_milestones):
            _fail("training.lr_decays_reached", n,
                  f"expected an integer in [0, {len(self.lr_milestones)}] (the milestones)")
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
    def from_yaml_file(cls, path: str) -> "RunConfig":
        """`from_yaml` of a file (`--config`); a one-line ConfigError when it is not one."""
        from pathlib import Path

        if not Path(path).is_file():
            raise ConfigError(f"config: {path!r} is not a file")
        return cls.from_yaml(Path(path).read_text())

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

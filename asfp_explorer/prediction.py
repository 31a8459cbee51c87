"""What a configuration will cost, before training: input shapes and predicted conv MACs.

Used by the dashboard's prediction line (and anything else that wants the numbers without
widgets). Units: MACs, multiply-accumulates of conv layers (fvcore's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .config import RunConfig

# Shapes of the built-in data sets: (channels, (height, width), classes); no need to load them.
KNOWN_SHAPES = {"digits": (1, (8, 8), 10), "cifar10": (3, (32, 32), 10)}

# (model name, (C, H, W), classes) -> a flops.MacCounter
CounterFactory = Callable[[str, tuple[int, int, int], int], Any]


def input_shape(config: RunConfig) -> tuple[int, tuple[int, int], int]:
    """(channels, (height, width), classes) of the configured data set; an npz archive is read
    (its header and labels), the built-in sets are known without loading."""
    if config.data.name in KNOWN_SHAPES:
        return KNOWN_SHAPES[config.data.name]
    from .data import load_npz

    d = load_npz(config.data.path)
    c, h, w = d.input_size
    return c, (h, w), d.num_classes


@dataclass(frozen=True)
class MacPrediction:
    """Conv MACs of the dense model and at the target ratio, in both conventions."""

    prune_ratio: float
    dense: int
    paper: float  # fractional channels: reproduces the papers' tables
    exact: int  # integer channels that the final masks keep

    @property
    def paper_cut(self) -> float:
        """Fraction of dense MACs removed, paper convention (0..1)."""
        return 1.0 - self.paper / self.dense

    @property
    def exact_cut(self) -> float:
        """Fraction of dense MACs removed, exactly (0..1)."""
        return 1.0 - self.exact / self.dense


def _build_counter(model_name: str, input_size: tuple[int, int, int], num_classes: int):
    from .flops import MacCounter
    from .models import build_model

    return MacCounter(build_model(model_name, num_classes, input_size[0]), input_size)


def predict_macs(config: RunConfig, counter: CounterFactory | None = None) -> MacPrediction:
    """Predicted conv MACs at `config.pruning.prune_ratio`. `counter` builds (and may cache)
    the MacCounter; the default builds one here."""
    channels, (h, w), classes = input_shape(config)
    c = (counter or _build_counter)(config.model.name, (channels, h, w), classes)
    p = config.pruning.prune_ratio
    return MacPrediction(p, int(c.dense_macs), float(c.paper_macs(p)),
                         int(c.exact_macs(c.kept_at(p))))

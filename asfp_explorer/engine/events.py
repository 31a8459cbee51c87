"""The events a run emits, and the immutable snapshot observers receive.

Observers are callables `observer(event) -> None`. They watch; they cannot change training:
they get read-only copies (numpy arrays with writeable=False, read-only mappings) and never
the model. An observer that raises is reported once and detached; the run goes on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np


class EventKind(str, enum.Enum):
    RUN_START = "run_start"  # data: config, layers, dense counts, device, environment
    MASKS_UPDATED = "masks_updated"  # data: EpochSnapshot (masks freshly recomputed)
    EVALUATED = "evaluated"  # data: {"masked": bool, "test_acc": float}
    EPOCH_END = "epoch_end"  # data: EpochSnapshot
    PARAMETERS_CHANGED = "parameters_changed"  # data: {"changes": {...}, "config": {...}}
    RUN_END = "run_end"  # data: {"status": finished|stopped|diverged|failed, "message": str}


@dataclass(frozen=True)
class Event:
    kind: EventKind
    epoch: int  # epochs completed when the event fired (0 = before training)
    data: Any


Observer = Callable[[Event], None]


@dataclass(frozen=True)
class EpochSnapshot:
    """Everything observers learn about one epoch; built from one device-to-host copy.

    Accuracies are fractions in [0, 1]; MACs are multiply-accumulates of conv layers;
    seconds are wall-clock. Per-layer arrays follow `layer_names` order.
    """

    epoch: int
    total_epochs: int
    lr: float
    prune_ratio: float  # scheduled P(epoch)
    realised_ratio: float  # pruned / prunable filters, as the masks hold them
    masks_updated: bool
    train_loss: float | None  # None at epoch 0
    train_acc: float | None
    test_acc_unmasked: float | None  # before the mask update (None when there was none)
    test_acc_masked: float | None  # after the mask; None for a soft run between mask updates
    layer_names: tuple[str, ...]
    norms: tuple[np.ndarray, ...]  # ℓ2 filter norms per layer, just before the mask was applied
    masks: tuple[np.ndarray, ...]  # bool per filter, True = kept
    pruned: tuple[int, ...]
    revived: tuple[int, ...]  # filters pruned at the previous update and kept now
    dead: tuple[int, ...]  # pruned at the previous update and still exactly zero before this one
    pruned_norm_median: tuple[float | None, ...]  # median l2 norm of previously pruned filters
    kept_norm_median: tuple[float | None, ...]  # ... and of previously kept ones
    exact_macs: int
    exact_params: int
    paper_macs: float
    epoch_seconds: float
    prune_seconds: float  # of which spent computing and applying masks
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def metrics(self) -> dict[str, Any]:
        """The JSON-able per-epoch record (one metrics.jsonl line)."""
        return {
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "lr": self.lr,
            "prune_ratio": self.prune_ratio,
            "realised_ratio": self.realised_ratio,
            "masks_updated": self.masks_updated,
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "test_acc_unmasked": self.test_acc_unmasked,
            "test_acc_masked": self.test_acc_masked,
            "pruned": dict(zip(self.layer_names, self.pruned)),
            "revived": dict(zip(self.layer_names, self.revived)),
            "pruned_total": int(sum(self.pruned)),
            "revived_total": int(sum(self.revived)),
            "dead": dict(zip(self.layer_names, self.dead)),
            "dead_total": int(sum(self.dead)),
            "pruned_norm_median": dict(zip(self.layer_names, self.pruned_norm_median)),
            "kept_norm_median": dict(zip(self.layer_names, self.kept_norm_median)),
            "acc_gap": (None if self.test_acc_unmasked is None or self.test_acc_masked is None
                        else self.test_acc_unmasked - self.test_acc_masked),
            "exact_macs": self.exact_macs,
            "exact_params": self.exact_params,
            "paper_macs": self.paper_macs,
            "epoch_seconds": self.epoch_seconds,
            "prune_seconds": self.prune_seconds,
            **dict(self.extra),
        }


def notify(observers: list[Observer], event: Event) -> list[str]:
    """Call every observer with `event`. One that raises is detached from `observers` (the
    run goes on) and described in the returned messages, except an essential one
    (`essential = True`, it keeps the record), whose error is raised."""
    errors = []
    for obs in list(observers):
        try:
            obs(event)
        except Exception as e:
            if getattr(obs, "essential", False):
                raise
            name = getattr(obs, "__name__", type(obs).__name__)
            errors.append(f"observer {name} raised {type(e).__name__}: {e}; it was detached")
            observers.remove(obs)
    return errors


def readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))

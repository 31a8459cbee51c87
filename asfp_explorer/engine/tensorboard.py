"""An observer that writes a run's metrics as TensorBoard event files.

    handle.trainer.add_observer(TensorBoardLogger("tb/asfp-s0"))   # or: train --tensorboard DIR
    tensorboard --logdir tb

One step per epoch (step = epochs completed, 0 = the initial masks). Accuracies and prune
ratios in percent, as the figures show them; MACs are multiply-accumulates of conv layers.
Needs the optional `tensorboard` package (pip install 'asfp-explorer[tensorboard]').

`SummaryWriter` queues each value for its own writer thread, so the training thread only
appends to a queue; the trainer detaches an observer that raises, so training goes on.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .events import Event, EventKind

# tag -> (metrics.jsonl key, scale)
SCALARS: dict[str, tuple[str, float]] = {
    "accuracy/test_masked_pct": ("test_acc_masked", 100.0),
    "accuracy/test_unmasked_pct": ("test_acc_unmasked", 100.0),
    "accuracy/train_pct": ("train_acc", 100.0),
    "accuracy/lost_to_mask_points": ("acc_gap", 100.0),
    "loss/train": ("train_loss", 1.0),
    "training/lr": ("lr", 1.0),
    "pruning/prune_ratio_scheduled_pct": ("prune_ratio", 100.0),
    "pruning/prune_ratio_realised_pct": ("realised_ratio", 100.0),
    "pruning/pruned_filters": ("pruned_total", 1.0),
    "pruning/revived_filters": ("revived_total", 1.0),
    "pruning/dead_filters": ("dead_total", 1.0),
    "macs/exact": ("exact_macs", 1.0),
    "macs/paper_convention": ("paper_macs", 1.0),
    "time/epoch_seconds": ("epoch_seconds", 1.0),
}


def require_tensorboard() -> type:
    """torch's SummaryWriter, or a one-line ConfigError when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from ..config import ConfigError

        raise ConfigError("tensorboard: needs the optional package tensorboard: "
                          "pip install 'asfp-explorer[tensorboard]'") from None
    return SummaryWriter


class TensorBoardLogger:
    """Observer: per-epoch scalars, the configuration, parameter changes and the run's end."""

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = os.fspath(log_dir)
        self.writer = require_tensorboard()(log_dir=self.log_dir)
        self.__name__ = "TensorBoardLogger"

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.EPOCH_END:
            metrics = event.data.metrics()
            for tag, (key, scale) in SCALARS.items():
                value = metrics.get(key)
                if value is not None:
                    self.writer.add_scalar(tag, scale * float(value), global_step=event.epoch)
        elif kind is EventKind.RUN_START:
            self.writer.add_text("config", _code(event.data.get("config", {})),
                                 global_step=event.epoch)
        elif kind is EventKind.PARAMETERS_CHANGED:
            self.writer.add_text("parameter_changes", _code(event.data["changes"]),
                                 global_step=event.epoch)
        elif kind is EventKind.RUN_END:
            self.writer.add_text("status", f"{event.data['status']}: {event.data['message']}",
                                 global_step=event.epoch)
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _code(obj: Any) -> str:
    """JSON as a markdown code block (TensorBoard renders text as markdown)."""
    text = json.dumps(obj, indent=1, default=str)
    return "    " + text.replace("\n", "\n    ")

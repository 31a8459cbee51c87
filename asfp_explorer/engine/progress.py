"""A terminal progress bar observer (one tick per epoch)."""

from __future__ import annotations

import sys

from .events import Event, EventKind


class ProgressBar:
    """tqdm bar over epochs with loss, masked accuracy, prune ratio and MAC share."""

    __name__ = "ProgressBar"

    def __init__(self, file=None):
        self.file = file or sys.stderr
        self.bar = None
        self.dense = None

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        if event.kind is EventKind.RUN_START:
            cfg = event.data["config"]
            self.dense = event.data["dense_macs"]
            self.bar = tqdm(total=cfg["training"]["epochs"], initial=event.data["start_epoch"],
                            unit="epoch", file=self.file, dynamic_ncols=True,
                            desc=f"{cfg['model']['name']} {cfg['pruning']['method']} "
                                 f"on {event.data['device']}")
        elif event.kind is EventKind.EPOCH_END and self.bar is not None and event.epoch > 0:
            s = event.data
            self.bar.total = s.total_epochs
            self.bar.set_postfix(loss=f"{s.train_loss:.3f}", acc=f"{s.test_acc_masked:.3f}",
                                 P=f"{s.prune_ratio:.3f}",
                                 macs=f"{s.exact_macs / self.dense:.0%}", refresh=False)
            self.bar.update(event.epoch - self.bar.n)
        elif event.kind is EventKind.RUN_END and self.bar is not None:
            self.bar.close()

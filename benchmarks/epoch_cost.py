"""Where an epoch's time goes: training iterations vs the epoch-end pruning step.

Prints, side by side in one run, for each (model, data set): mean epoch seconds, mean
seconds of the mask update (norms, ranking, zeroing), and their ratio; plus the time the
recorder (run directory writes) takes per epoch. Usage:

    python benchmarks/epoch_cost.py [--epochs 5] [--cifar PATH_TO_NPZ] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from asfp_explorer.config import RunConfig
from asfp_explorer.data import Dataset, load_npz
from asfp_explorer.engine import EventKind, RunHandle


class Timed:
    """Wraps an observer and sums the seconds spent in it."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0
        self.__name__ = f"Timed({getattr(inner, '__name__', type(inner).__name__)})"

    def __call__(self, event):
        t0 = time.perf_counter()
        self.inner(event)
        self.seconds += time.perf_counter() - t0
        self.calls += event.kind is EventKind.EPOCH_END


def measure(model: str, data: RunConfig, dataset: Dataset | None, epochs: int, device: str):
    cfg = data.with_changes(model={"name": model},
                            training={"epochs": epochs, "device": device})
    with tempfile.TemporaryDirectory() as tmp:
        handle = RunHandle(cfg, Path(tmp) / "run", dataset=dataset)
        timed = Timed(handle.trainer.observers[0])  # the recorder
        handle.trainer.observers[0] = timed
        handle.run()
        m = handle.recorder.run.metrics[1:]
    epoch_s = statistics.mean(x["epoch_seconds"] for x in m)
    prune_s = statistics.mean(x["prune_seconds"] for x in m)
    return epoch_s, prune_s, timed.seconds / max(timed.calls, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cifar", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                           / "cifar10-subset.npz"))
    ap.add_argument("--cifar-train", type=int, default=2000, help="training images used")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    digits = RunConfig().with_changes(data={"batch_size": 128})
    for model in ("resnet20", "resnet56"):
        rows.append((model, "digits", *measure(model, digits, None, args.epochs, args.device)))
    if Path(args.cifar).exists():
        d = load_npz(args.cifar)
        n = args.cifar_train
        small = Dataset("npz", d.x_train[:n], d.y_train[:n], d.x_test[:1000], d.y_test[:1000],
                        d.mean, d.std, 10)
        cfg = RunConfig().with_changes(data={"name": "npz", "path": args.cifar})
        for model in ("resnet20", "resnet56"):
            rows.append((model, f"cifar10[{n}]", *measure(model, cfg, small, max(2, args.epochs // 2),
                                                           args.device)))
    dev = "cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())) else "cpu"
    print(f"device: {torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':<10} {'data':<14} {'epoch s':>9} {'prune s':>9} {'prune/epoch':>12} {'recorder s':>11}")
    for model, data, e, p, r in rows:
        print(f"{model:<10} {data:<14} {e:9.3f} {p:9.4f} {p / e:12.2%} {r:11.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

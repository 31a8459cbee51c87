"""What the live fvcore count costs a training epoch that runs beside it, in one process.

The dashboard counts compact-model MACs (torch.fx rewrite + fvcore's jit trace) on a thread
while training runs on another; training holds no lock, but both threads share the GIL. This
times one pass over the training set (digits, ResNet-20, batch 64, one torch thread) alone,
beside one count (what a run does at most once per epoch: a count per new set of kept
counts), and beside a thread that counts without pause (the worst case). The configurations
alternate, one warm-up round is dropped, and the median and spread (min-max) are printed in
seconds, with the number of counts done meanwhile. Usage:

    python benchmarks/training_beside_counts.py [--repeats 7]

Printed, never asserted: times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch

from asfp_explorer.config import RunConfig
from asfp_explorer.engine import Trainer
from asfp_explorer.viz.compact_macs import compact_conv_macs

MODES = {"alone": 0, "beside one count": 1, "beside counts without pause": None}


def counting(config: dict, info: dict, masks: list, stop: threading.Event, done: list,
             limit: int | None) -> None:
    while not stop.is_set() and (limit is None or len(done) < limit):
        compact_conv_macs(config, info, masks)
        done.append(1)


def one_pass(trainer: Trainer, limit: int | None) -> tuple[float, int]:
    """Seconds of one training pass, and the counts finished meanwhile."""
    stop, done = threading.Event(), []
    names = list(trainer.layer_names)
    masks = [np.arange(n) % 3 != 0 for n in trainer.layer_sizes]
    info = {"input_size": tuple(trainer.data.input_size), "num_classes": trainer.data.num_classes,
            "layer_names": names}
    t = threading.Thread(target=counting,
                         args=(trainer.config.to_dict(), info, masks, stop, done, limit))
    if limit != 0:
        t.start()
    t0 = time.perf_counter()
    trainer._iterations()  # one pass over the training set, as in an epoch
    seconds = time.perf_counter() - t0
    if limit != 0:
        stop.set()
        t.join()
    return seconds, len(done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    config = RunConfig().with_changes(training={"epochs": 10, "device": "cpu"},
                                      data={"batch_size": 64})
    trainer = Trainer(config)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    counts: list[int] = []
    order = list(MODES)
    for r in range(args.repeats + 1):
        for mode in (order if r % 2 else order[::-1]):
            seconds, n = one_pass(trainer, MODES[mode])
            if r:  # round 0 warms up
                times[mode].append(seconds)
                if MODES[mode] is None:
                    counts.append(n)
    for mode, t in times.items():
        print(f"{mode:28s} median {statistics.median(t):.3f} s  spread {min(t):.3f}-{max(t):.3f} s"
              f"  ({len(t)} passes)")
    print(f"counts finished per pass without pause: median {statistics.median(counts):g}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)")


if __name__ == "__main__":
    main()

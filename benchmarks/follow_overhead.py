"""What a live view costs when training runs in its own process: `asfp-explorer train` alone
vs the same command with `Dashboard.follow(run_dir)` redrawing in this process.

The in-kernel dashboard trains on a background thread of the notebook's process; on a CPU
that thread pays for the main thread's OpenMP pool (benchmarks/overhead.py, "explorer,
background thread"). A training process of its own has no such pool, and a follower only
reads the run directory. Whole runs alternate (alone, followed), `--rounds` times; an epoch's
cost is the run's own `epoch_seconds` (training, evaluations and mask update, measured inside
the training process), first epoch dropped. Printed, never asserted.

    python benchmarks/follow_overhead.py [--epochs 8] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_command(run_dir: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "asfp_explorer", "train", "--epochs", str(epochs),
            "--out", str(run_dir), "--quiet"]


def epoch_seconds(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch_seconds"] for line in lines][2:]  # epoch 0 and 1 dropped


def alone(epochs: int, env: dict) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        subprocess.run(train_command(run_dir, epochs), check=True, env=env)
        return epoch_seconds(run_dir)


def followed(epochs: int, env: dict) -> list[float]:
    from asfp_explorer.viz.dashboard import Dashboard

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        proc = subprocess.Popen(train_command(run_dir, epochs), env=env)
        dash = Dashboard.follow(run_dir, poll_seconds=0.25, start_timeout=120)
        if proc.wait() != 0:
            raise SystemExit("the training process failed")
        time.sleep(1.0)  # the follower's last poll
        dash.close()
        return epoch_seconds(run_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="the training process's torch threads")
    args = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    times: dict[str, list[float]] = {"train process alone": [], "train process + follow": []}
    for _ in range(args.rounds):
        times["train process alone"] += alone(args.epochs, env)
        times["train process + follow"] += followed(args.epochs, env)
    ref = statistics.median(times["train process alone"])
    print(f"digits, resnet20, {args.threads} threads in the training process, {args.rounds} "
          f"rounds x {args.epochs} epochs, epochs 0-1 dropped")
    print("\n| configuration | epoch_seconds, median [min-max] | vs alone |")
    print("|---|---|---|")
    for name, xs in times.items():
        print(f"| {name} | {statistics.median(xs):.3f} s [{min(xs):.3f}-{max(xs):.3f}] | "
              f"{statistics.median(xs) / ref:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long `asfp-explorer` takes to start: `--help`, `schedule` and `show --help`.

Each command runs in a fresh interpreter (as a user types it); the commands alternate so that
a slow moment of the machine hits all of them alike. One warm-up round is dropped (it fills
the OS file cache). Prints the median and the spread (min-max) in seconds. Usage:

    python benchmarks/cli_startup.py [--repeats 7]

Printed, never asserted: start-up time depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "--help": ["--help"],
    "schedule": ["schedule", "--method", "asfp", "--ratio", "0.4", "--epochs", "200"],
    "show --help": ["show", "--help"],
}


def once(args: list[str]) -> float:
    """Wall-clock seconds of one `python -m asfp_explorer.cli ARGS` (exit status checked)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "asfp_explorer.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    for argv in COMMANDS.values():  # warm-up round, not counted
        once(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            times[name].append(once(argv))
    print(f"CLI start-up, {args.repeats} runs each, fresh interpreter per run "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs)")
    for name, t in times.items():
        print(f"  asfp-explorer {name:<12} median {statistics.median(t):.2f} s  "
              f"spread {min(t):.2f}-{max(t):.2f} s")


if __name__ == "__main__":
    main()

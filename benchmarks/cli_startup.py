"""How long `asfp-explorer` takes to start: `--help`, `schedule` and `show --help`.

Each command runs in a fresh interpreter (as a user types it); the commands alternate so that
a slow moment of the machine hits all of them alike. One warm-up round is dropped (it fills
the OS file cache). Prints the median and the spread (min-max) in seconds. Usage:

    python benchmarks/cli_startup.py [--repeats 7] [--before DIR]

`--before DIR`: also time the package in DIR (a checkout of an older commit, e.g. made with
`git worktree add DIR COMMIT`), alternating with this one, so both columns share the moment.

Printed, never asserted: start-up time depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "--help": ["--help"],
    "schedule": ["schedule", "--method", "asfp", "--ratio", "0.4", "--epochs", "200"],
    "show --help": ["show", "--help"],
}


def once(args: list[str], cwd: Path) -> float:
    """Wall-clock seconds of one `python -m asfp_explorer.cli ARGS` run in `cwd`, whose
    `asfp_explorer` is imported (`-m` puts the working directory first); status checked."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "asfp_explorer.cli", *args], check=True, env=env,
                   cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--before", type=Path, help="an older checkout to time beside this one")
    args = ap.parse_args()
    trees = {"this checkout": ROOT}
    if args.before is not None:
        if not (args.before / "asfp_explorer" / "cli.py").is_file():
            ap.error(f"--before: {args.before} has no asfp_explorer/cli.py")
        trees = {"before": args.before.resolve(), **trees}
    for tree in trees.values():  # warm-up round (fills the OS file cache), not counted
        for argv in COMMANDS.values():
            once(argv, tree)
    times = {(t, c): [] for t in trees for c in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            for label, tree in trees.items():
                times[(label, name)].append(once(argv, tree))
    print(f"CLI start-up, {args.repeats} runs each, fresh interpreter per run "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs)")
    print("\n| command | " + " | ".join(trees) + " |")
    print("|---|" + "---|" * len(trees))
    for name in COMMANDS:
        cells = [f"{statistics.median(t):.2f} s ({min(t):.2f}-{max(t):.2f})"
                 for t in (times[(label, name)] for label in trees)]
        print(f"| `asfp-explorer {name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

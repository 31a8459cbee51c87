"""`asfp-explorer schedule`: the scheduled prune ratio for each completed-epoch count 0..T."""

from __future__ import annotations

import json

from ..config import METHODS, ConfigError, PruningConfig, TrainingConfig
from ..schedules import schedule_values

MAX_EPOCHS = 100_000  # as `train`


def add_parser(sub) -> None:
    p = sub.add_parser("schedule", help="print the prune-ratio schedule")
    p.add_argument("--method", choices=list(METHODS), default="asfp")
    p.add_argument("--ratio", type=float, default=0.4, help="target prune ratio in [0, 1)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--d", type=float, default=0.125, help="asfp: P(d*T) = 3/4 of the target")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=run)


def run(args) -> int:
    pruning = PruningConfig(method=args.method, prune_ratio=args.ratio, d=args.d)
    TrainingConfig(epochs=args.epochs)  # validates epochs
    if args.epochs > MAX_EPOCHS:  # one line per epoch: a huge count would never finish
        raise ConfigError(f"epochs: {args.epochs} is not allowed; expected at most "
                          f"{MAX_EPOCHS:,}")
    values = schedule_values(pruning.schedule, args.epochs, args.ratio, args.d)
    if args.json:
        print(json.dumps({"method": args.method, "schedule": pruning.schedule,
                          "prune_ratio": args.ratio, "epochs": args.epochs, "d": args.d,
                          "values": values}))
    else:
        for e, v in enumerate(values):
            print(f"{e}\t{v:.5f}")
    return 0

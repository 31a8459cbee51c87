"""`asfp-explorer train`: one run, written to a run directory, with a progress bar."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from ..config import CRITERIA, DATASETS, DEVICES, METHODS, MODELS, ConfigError, RunConfig


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train with (asymptotic) soft filter pruning")
    p.add_argument("--config", metavar="YAML", help="a run configuration; flags override it")
    p.add_argument("--model", choices=list(MODELS))
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--data-path", help="cifar10: its folder (default data/); npz: the file")
    p.add_argument("--method", choices=list(METHODS))
    p.add_argument("--ratio", type=float, help="target prune ratio in [0, 1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--d", type=float, help="asfp: P(d*epochs) = 3/4 of the target, in (0, 0.75)")
    p.add_argument("--interval", type=int, help="epochs between mask updates")
    p.add_argument("--criterion", choices=list(CRITERIA))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--device", choices=list(DEVICES))
    p.add_argument("--seed", type=int)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args) -> RunConfig:
    """The YAML file (if any), then the flags that were given."""
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config: {args.config!r} is not a file")
        config = RunConfig.from_yaml(path.read_text())
    else:
        config = RunConfig()
    sections = {
        "data": {"name": args.dataset, "path": args.data_path, "batch_size": args.batch_size},
        "model": {"name": args.model},
        "pruning": {"method": args.method, "prune_ratio": args.ratio, "d": args.d,
                    "interval": args.interval, "criterion": args.criterion},
        "training": {"epochs": args.epochs, "lr": args.lr, "device": args.device,
                     "seed": args.seed},
    }
    given = {s: {k: v for k, v in f.items() if v is not None} for s, f in sections.items()}
    return config.with_changes(**{s: f for s, f in given.items() if f})


def default_out(config: RunConfig) -> Path:
    c = config
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / (f"{c.model.name}-{c.data.name}-{c.pruning.method}-"
                           f"p{c.pruning.prune_ratio:g}-s{c.training.seed}-{stamp}")


def run(args) -> int:
    from ..engine import RunHandle
    from ..engine.progress import ProgressBar

    if args.resume:
        if args.out or args.overwrite:
            raise ConfigError("resume: not allowed together with --out or --overwrite")
        handle = RunHandle(None, args.resume, resume=True)
        out = Path(args.resume)
    else:
        config = config_from_args(args)
        out = Path(args.out) if args.out else default_out(config)
        handle = RunHandle(config, out, overwrite=args.overwrite)
    if not args.quiet:
        handle.trainer.add_observer(ProgressBar())

    def on_sigterm(signum, frame):  # same clean stop as Ctrl-C: the epoch in progress is dropped
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        status = handle.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = handle.recorder.run.summary
    print(f"{status}: {summary.get('message', '')}", file=sys.stderr)
    print(out)
    return {"finished": 0, "stopped": 130, "diverged": 3}.get(status, 1)

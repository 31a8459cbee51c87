"""`asfp-explorer study`: a grid of runs (methods x ratios x seeds x remedies) in one folder,
resumable, with one progress bar, summarised in summary.md / summary.json / compare.html.

The grid logic lives in asfp_explorer/study.py; this file parses flags and draws progress.
"""

from __future__ import annotations

import shlex
import signal
import sys
from typing import Any, Sequence

from ..config import DATASETS, DEVICES, MODELS, ConfigError, RunConfig
from ..study import StudyProgress

DEFAULT_GRID = {"methods": "unpruned,hard-sfp,hard-asfp,sfp,asfp", "ratios": "0.4",
                "seeds": "0,1", "remedies": "none"}


def add_parser(sub) -> None:
    from ..study import DEFAULT_ADAPTIVE_BN_BATCHES, PRESETS, REMEDIES, STUDY_METHODS

    p = sub.add_parser("study", help="train a grid of runs and summarise it (mean ± std)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the study folder (created; rerun the same command to resume)")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="a named study; flags given as well override it")
    p.add_argument("--config", metavar="YAML", help="base run configuration; flags override it")
    p.add_argument("--model", metavar="NAME",
                   help=f"{', '.join(MODELS)}, or package.module:factory (a builder "
                        "(num_classes, in_channels) -> nn.Module)")
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--data-path", help="cifar10: its folder (default data/); npz: the file")
    p.add_argument("--methods", metavar="LIST",
                   help=f"comma-separated, of {', '.join(STUDY_METHODS)} "
                        f"(default {DEFAULT_GRID['methods']})")
    p.add_argument("--ratios", metavar="LIST", help="prune ratios in (0, 1) (default 0.4)")
    p.add_argument("--seeds", metavar="LIST", help="integers >= 0 (default 0,1)")
    p.add_argument("--remedies", metavar="LIST",
                   help=f"of {', '.join(REMEDIES)} (default none); unpruned gets none only")
    p.add_argument("--remedy-methods", metavar="LIST",
                   help="the methods that get remedies other than none (default: every "
                        "pruned method of --methods)")
    p.add_argument("--adaptive-bn-batches", type=int, metavar="N",
                   help=f"batches per BN re-estimate for adaptive-bn "
                        f"(default {DEFAULT_ADAPTIVE_BN_BATCHES})")
    p.add_argument("--epochs", type=int, help="per run; the LR steps are fractions of it")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--train-subset", type=int, metavar="N",
                   help="train on the first N training images, class-balanced (0 = all)")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--device", choices=list(DEVICES))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _split(name: str, text: str, kind: type) -> tuple:
    items = [s.strip() for s in text.split(",") if s.strip()]
    out = []
    for s in items:
        try:
            out.append(kind(s))
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{name}: {s!r} is not allowed; expected {what}") from None
    return tuple(out)


def grid_and_config(args) -> tuple[Any, RunConfig]:
    """(StudyGrid, base RunConfig) from --config, then --preset, then the flags."""

    from ..study import StudyGrid, preset_grid

    base = RunConfig.from_yaml_file(args.config) if args.config else RunConfig()
    grid: dict[str, Any] = {k: _split(k, v, str) for k, v in DEFAULT_GRID.items()}
    if args.preset:
        changes, preset = preset_grid(args.preset)
        base = base.with_changes(**changes)
        grid.update(preset)
    given = {"methods": (args.methods, str), "ratios": (args.ratios, float),
             "seeds": (args.seeds, int), "remedies": (args.remedies, str),
             "remedy_methods": (args.remedy_methods, str)}
    for key, (text, kind) in given.items():
        if text is not None:
            grid[key] = _split(key.replace("_", "-"), text, kind)
    grid["ratios"] = tuple(float(r) for r in grid["ratios"])
    grid["seeds"] = tuple(int(s) for s in grid["seeds"])
    if args.adaptive_bn_batches is not None:
        grid["adaptive_bn_batches"] = args.adaptive_bn_batches
    sections = {
        "data": {"name": args.dataset, "path": args.data_path, "batch_size": args.batch_size,
                 "train_subset": args.train_subset},
        "model": {"name": args.model},
        "training": {"epochs": args.epochs, "lr": args.lr, "device": args.device},
    }
    flags = {s: {k: v for k, v in f.items() if v is not None} for s, f in sections.items()}
    base = base.with_changes(**{s: f for s, f in flags.items() if f})
    return StudyGrid(**grid), base


def command_line(args) -> str:
    """The command as given (flags in a fixed order), for the summary."""
    parts = ["asfp-explorer", "study"]
    for flag in ("out", "preset", "config", "model", "dataset", "data_path", "methods", "ratios",
                 "seeds", "remedies", "remedy_methods", "adaptive_bn_batches", "epochs",
                 "batch_size", "train_subset", "lr", "device"):
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    return shlex.join(parts)


class StudyProgressBar(StudyProgress):
    """One tqdm bar over every epoch of the study: runs done / total, the current run, its
    epoch and accuracy; tqdm's ETA is for the whole study."""

    def __init__(self, file=None):
        self.file = file or sys.stderr
        self.bar = None
        self.runs: Sequence[Any] = ()
        self.done = 0
        self.run_name = ""

    def study_start(self, runs, done_runs: int, done_epochs: int, total_epochs: int) -> None:
        from tqdm.auto import tqdm

        self.runs, self.done = runs, done_runs
        self.bar = tqdm(total=total_epochs, initial=done_epochs, unit="epoch", file=self.file,
                        dynamic_ncols=True, desc=f"study: {done_runs}/{len(runs)} runs done")

    def run_start(self, index: int, run, start_epoch: int) -> None:
        self.run_name = run.name
        self.bar.set_description(f"{self.done}/{len(self.runs)} runs done; now {run.name}",
                                 refresh=True)

    def event(self, event) -> None:
        from ..engine.events import EventKind

        if event.kind is EventKind.EPOCH_END and event.epoch > 0 and self.bar is not None:
            s = event.data
            acc = s.test_acc_masked if s.test_acc_masked is not None else s.test_acc_unmasked
            self.bar.set_postfix(epoch=f"{s.epoch}/{s.total_epochs}",
                                 acc=f"{acc:.3f}" if acc is not None else "-", refresh=False)
            self.bar.update(1)

    def run_end(self, index: int, run, status: str) -> None:
        if status in ("finished", "diverged"):
            self.done += 1
        self.bar.set_description(f"{self.done}/{len(self.runs)} runs done", refresh=True)

    def study_end(self, status: str) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    from ..study import Study

    grid, base = grid_and_config(args)
    study = Study(base, grid, args.out, command=command_line(args))
    study.check()  # every one-line error before anything is created or trained

    def on_sigterm(signum, frame):  # same clean stop as Ctrl-C: the run stays resumable
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        status = study.run(StudyProgress() if args.quiet else StudyProgressBar())
    except KeyboardInterrupt:
        status = "stopped"
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status != "finished":
        print(f"study {status}; run the same command again to resume "
              f"(finished runs are kept)", file=sys.stderr)
        return 130 if status == "stopped" else 1
    study.summarise()
    text = (study.out / "summary.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    print("\n".join(table))
    print(f"wrote {study.out / 'summary.md'}, summary.json, compare.html")
    return 0

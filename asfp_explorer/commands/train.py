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
    p.add_argument("--preset", metavar="NAME",
                   help="a row of the papers' tables (see: asfp-explorer presets); flags "
                        "override it")
    p.add_argument("--model", metavar="NAME",
                   help=f"{', '.join(MODELS)}, or package.module:factory (a builder "
                        "(num_classes, in_channels) -> nn.Module)")
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--data-path", help="cifar10: its folder (default data/); npz: the file; "
                                       "imagefolder: the folder with train/ and val/")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="imagefolder: training crop size in pixels (default 224)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="imagefolder: DataLoader worker processes (default 4)")
    p.add_argument("--weights", metavar="FILE",
                   help="start from this state_dict (the papers' 'pretrained' variant; train "
                        "it with lr / 10)")
    p.add_argument("--method", choices=list(METHODS))
    p.add_argument("--ratio", type=float, help="target prune ratio in [0, 1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--d", type=float, help="asfp: P(d*epochs) = 3/4 of the target, in (0, 0.75)")
    p.add_argument("--interval", type=int, help="epochs between mask updates")
    p.add_argument("--criterion", choices=list(CRITERIA))
    p.add_argument("--fpgm-norm-share", type=float, metavar="S",
                   help="fpgm-mix: share of the pruned filters picked by norm, in [0, 1] "
                        "(default 0.25: the FPGM paper's 10 %% of 40 %%)")
    p.add_argument("--adaptive-bn", type=int, metavar="N", dest="adaptive_bn_batches",
                   help="remedy beyond the paper: after each mask, re-estimate BN statistics "
                        "from N training batches (default 0 = off)")
    p.add_argument("--mask-bn", action="store_true", default=None,
                   help="remedy beyond the paper: zero BN gamma/beta of pruned channels too")
    p.add_argument("--width-multiple", type=int, metavar="M",
                   help="extension beyond the paper: round each layer's pruned count so kept "
                        "widths are multiples of M (e.g. 8; default 1 = the paper's floor(N P))")
    p.add_argument("--skip-unmasked-eval", action="store_false", default=None,
                   dest="eval_unmasked",
                   help="do not evaluate before each mask (saves one test pass per epoch; "
                        "no unmasked curve)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="speed option: bf16 autocast (default fp32, the paper's arithmetic)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="speed option: NHWC memory format (helps convs on GPUs)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="speed option: torch.compile the training forward pass")
    p.add_argument("--sync-batchnorm", action="store_true", default=None,
                   help="torchrun on GPUs: SyncBatchNorm across ranks (default: per-rank BN "
                        "statistics, as the papers' DataParallel runs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--device", choices=list(DEVICES))
    p.add_argument("--seed", type=int)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also write per-epoch metrics as TensorBoard event files in DIR "
                        "(needs: pip install 'asfp-explorer[tensorboard]')")
    p.set_defaults(func=run)


def config_from_args(args) -> RunConfig:
    """The YAML file (if any), then the flags that were given."""
    preset = getattr(args, "preset", None)
    if args.config and preset:
        raise ConfigError("preset: not allowed together with --config; choose one")
    if preset:
        from ..presets import paper_preset

        config = paper_preset(preset).config(args.data_path)
    elif args.config:
        config = RunConfig.from_yaml_file(args.config)
    else:
        config = RunConfig()
    sections = {
        "data": {"name": args.dataset, "path": args.data_path, "batch_size": args.batch_size,
                 "image_size": getattr(args, "image_size", None),
                 "workers": getattr(args, "workers", None)},
        "model": {"name": args.model, "weights": getattr(args, "weights", None)},
        "pruning": {"method": args.method, "prune_ratio": args.ratio, "d": args.d,
                    "interval": args.interval, "criterion": args.criterion,
                    "fpgm_norm_share": args.fpgm_norm_share,
                    "adaptive_bn_batches": args.adaptive_bn_batches, "mask_bn": args.mask_bn,
                    "width_multiple": args.width_multiple},
        "training": {"epochs": args.epochs, "lr": args.lr, "device": args.device,
                     "seed": args.seed, "eval_unmasked": args.eval_unmasked,
                     "precision": args.precision, "channels_last": args.channels_last,
                     "compile": args.compile,
                     "sync_batchnorm": getattr(args, "sync_batchnorm", None)},
    }
    given = {s: {k: v for k, v in f.items() if v is not None} for s, f in sections.items()}
    config = config.with_changes(**{s: f for s, f in given.items() if f})
    if preset and paper_preset(preset).pretrained and not config.model.weights:
        raise ConfigError(f"model.weights: preset {preset!r} starts from pretrained weights; "
                          "give them with --weights FILE (a state_dict)")
    return config


def default_out(config: RunConfig) -> Path:
    c = config
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / (f"{c.model.name.replace(':', '.')}-{c.data.name}-{c.pruning.method}-"
                           f"p{c.pruning.prune_ratio:g}-s{c.training.seed}-{stamp}")


def run(args) -> int:
    # SIGTERM is a clean stop like Ctrl-C from the first moment, imports included.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _train(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(args) -> int:
    tensorboard = error = None
    try:
        try:
            from ..engine import RunHandle
            from ..engine.progress import ProgressBar

            if args.tensorboard:  # before the run directory is touched: one line if missing
                from ..engine.tensorboard import require_tensorboard

                require_tensorboard()
            from ..engine.distributed import from_environment

            dist = from_environment(getattr(args, "device", None) or "auto")
            if dist is not None and not dist.is_main:  # rank 0 alone writes and reports
                return _other_rank(args, RunHandle)
            handle, out = _open(args, RunHandle)
        except KeyboardInterrupt:
            print("stopped during start-up, before anything was trained; run the same "
                  "command again", file=sys.stderr)
            return 130
        if handle.restarted:
            print(f"{out}: the run stopped before its first checkpoint; starting it again "
                  "from its saved config", file=sys.stderr)
        if not args.quiet:
            handle.trainer.add_observer(ProgressBar())
        if args.tensorboard:
            from ..engine.tensorboard import TensorBoardLogger

            tensorboard = TensorBoardLogger(args.tensorboard)
            handle.trainer.add_observer(tensorboard)
        try:
            status = handle.run()
        except Exception as e:  # recorded as failed where the record could still be written
            status, error = "failed", e
    finally:
        if tensorboard is not None:
            tensorboard.close()
    print(_final_line(status, handle, out, error), file=sys.stderr)
    print(out)
    return {"finished": 0, "stopped": 130, "diverged": 3}.get(status, 1)


def _other_rank(args, RunHandle) -> int:
    """A rank other than 0 under torchrun: trains its share, writes nothing, prints nothing.
    On --resume it reads the checkpoint that rank 0 resumes from (a shared folder)."""
    from ..store import load_checkpoint

    if args.resume:
        if resume_changes(args):
            raise ConfigError("resume: flags that change the run are not supported under "
                              "torchrun; resume on one process to change them")
        state = load_checkpoint(args.resume)
        handle = RunHandle(RunConfig.from_dict(state["config"]))
        handle.trainer.load_checkpoint_state(state)
    else:
        config = config_from_args(args)
        _check_epochs(config.training.epochs)
        handle = RunHandle(config)
    status = handle.run()
    return {"finished": 0, "stopped": 130, "diverged": 3}.get(status, 1)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# Flag -> the config field it sets (used to tell which flags a resume may change).
FLAG_FIELDS = {
    "config": None, "preset": None, "model": ("model", "name"), "dataset": ("data", "name"),
    "weights": ("model", "weights"), "image_size": ("data", "image_size"),
    "workers": ("data", "workers"),
    "data_path": ("data", "path"), "batch_size": ("data", "batch_size"),
    "method": ("pruning", "method"), "ratio": ("pruning", "prune_ratio"), "d": ("pruning", "d"),
    "interval": ("pruning", "interval"), "criterion": ("pruning", "criterion"),
    "fpgm_norm_share": ("pruning", "fpgm_norm_share"),
    "adaptive_bn_batches": ("pruning", "adaptive_bn_batches"), "mask_bn": ("pruning", "mask_bn"),
    "width_multiple": ("pruning", "width_multiple"),
    "epochs": ("training", "epochs"), "lr": ("training", "lr"),
    "device": ("training", "device"), "seed": ("training", "seed"),
}
MAX_EPOCHS = 100_000  # far beyond any schedule in the papers (200); bounds runaway input


def _check_epochs(epochs: int | None) -> None:
    if epochs is not None and epochs > MAX_EPOCHS:
        raise ConfigError(f"training.epochs: {epochs} is not allowed; expected at most "
                          f"{MAX_EPOCHS:,}")


def resume_changes(args) -> dict[str, dict]:
    """The changeable fields given with --resume, by section; other flags are refused."""
    from ..engine.trainer import CHANGEABLE

    changes: dict[str, dict] = {}
    for flag, target in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if target is None or target[1] not in CHANGEABLE.get(target[0], ()):
            allowed = sorted(f"--{f.replace('_', '-')}" for f, t in FLAG_FIELDS.items()
                             if t and t[1] in CHANGEABLE.get(t[0], ()))
            raise ConfigError(f"resume: --{flag.replace('_', '-')} cannot change when resuming "
                              f"(it fixes the run); changeable: {', '.join(allowed)}")
        changes.setdefault(target[0], {})[target[1]] = value
    _check_epochs(changes.get("training", {}).get("epochs"))
    return changes


def _open(args, RunHandle):
    """The run handle and its directory (a resume, or a new run)."""
    if args.resume:
        if args.out or args.overwrite:
            raise ConfigError("resume: not allowed together with --out or --overwrite")
        out = Path(args.resume)
        return RunHandle(None, out, resume=True, changes=resume_changes(args)), out
    config = config_from_args(args)
    _check_epochs(config.training.epochs)
    out = Path(args.out) if args.out else default_out(config)
    return RunHandle(config, out, overwrite=args.overwrite), out


def _final_line(status: str, handle, out: Path, error: BaseException | None) -> str:
    """One line: the status and why (no traceback), and how to continue where possible."""
    message = handle.recorder.run.summary.get("message", "") if handle.recorder else ""
    if error is not None and not message:
        message = f"{type(error).__name__}: {error}"
    line = message if message.startswith(f"{status}:") else f"{status}: {message}"
    if status == "failed" and (out / "checkpoint.pt").exists():
        from ..store import RunDirError, load_checkpoint

        try:
            kept = f"the checkpoint of epoch {load_checkpoint(out)['epoch']} is kept"
        except RunDirError as e:
            kept = f"the checkpoint cannot be used ({e})"
        line += f"; {kept}: continue with asfp-explorer train --resume {out}"
    return " ".join(line.split("\n"))

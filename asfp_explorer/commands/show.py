"""`asfp-explorer show RUN_DIR`: a run's summary as a table."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="summary of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write metrics.jsonl as CSV (a row per epoch; per-layer values as "
                        "key/layer columns) to FILE, or to standard output with -")
    p.add_argument("--follow", action="store_true",
                   help="follow a run another process is writing: one line per epoch as it "
                        "lands (resumes and restarts included); exits 0 once the run ended")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="with --follow: give up (exit 1) after this long without anything new")
    p.set_defaults(func=run)


def _is_fraction(key: str) -> bool:
    """Accuracies, prune ratios and MAC reductions: fractions in the records, shown in percent
    as the figures show them (--json and --csv keep the fractions)."""
    return any(word in key for word in ("acc", "ratio", "reduction"))


def _fmt(v, key: str = "") -> str:
    if isinstance(v, float) and _is_fraction(key):
        return f"{100 * v:.2f} %"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _changes_text(changes: dict) -> str:
    return ", ".join(f"{section}.{key}={value}" for section, fields in changes.items()
                     for key, value in fields.items())


def run(args) -> int:
    from ..store import load_run

    if args.follow:
        return _follow(args)
    run = load_run(args.run_dir)
    if args.csv:
        return _write_csv(run, args.csv)
    c = run.config
    rows = {
        "run": run.name,
        "status": run.status,
        "model": c["model"]["name"],
        "data set": c["data"]["name"],
        "method": c["pruning"]["method"],
        "criterion": c["pruning"]["criterion"],
        "target prune ratio": c["pruning"]["prune_ratio"],
        "d": c["pruning"]["d"],
        "seed": c["training"]["seed"],
        "device": run.info.get("device"),
        **{k.replace("_", " "): v for k, v in run.summary.items()
           if k not in ("status", "config", "changes")},
        "fvcore dense MACs": run.info.get("fvcore_dense_macs"),
        # The config above is the current one; these are the steps from the start to it.
        **{f"change after epoch {ch['epoch']}": _changes_text(ch["changes"])
           for ch in run.changes},
    }
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k:<{width}}  {_fmt(v, k)}")
    return 0


def _write_csv(run, target: str) -> int:
    import sys
    from pathlib import Path

    from ..metrics_csv import metrics_columns, metrics_csv_text
    from ..store import atomic_write_bytes

    text = metrics_csv_text(run.metrics)
    if target == "-":
        sys.stdout.write(text)
        return 0
    try:
        atomic_write_bytes(Path(target), text.encode("utf-8"))
    except OSError as e:
        print(f"asfp-explorer show: --csv: cannot write {target!r} ({e.strerror})",
              file=sys.stderr)
        return 2
    print(f"wrote {target} ({len(run.metrics)} epochs, "
          f"{len(metrics_columns(run.metrics))} columns)")
    return 0


def _follow(args) -> int:
    """Print the run's epochs as they land; 0 once it has ended, 1 on --timeout."""
    import sys
    from pathlib import Path

    from ..store.follow import RunFollower, epoch_line

    if args.json or args.csv:
        raise ValueError("show: --follow prints lines as the run goes; not with --json/--csv")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"show: --timeout {args.timeout!r} is not allowed; expected seconds > 0")
    follower = RunFollower(args.run_dir)
    if not (Path(args.run_dir) / "config.json").exists():
        print(f"waiting for a run to start in {args.run_dir} ...", file=sys.stderr, flush=True)
    try:
        for item in follower.items(idle_timeout=args.timeout):
            if item.kind == "epoch":
                line = epoch_line(item.metrics, follower.run.info.get("dense_macs"))
            elif item.kind == "ended":
                line = f"run {item.status}: {item.message}"
            else:
                line = f"{item.kind}: {item.message}"
            print(line, flush=True)
    except TimeoutError as e:
        print(f"asfp-explorer show: {e}; giving up", file=sys.stderr)
        return 1
    return 0

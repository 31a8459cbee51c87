"""`asfp-explorer show RUN_DIR`: a run's summary as a table."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="summary of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def run(args) -> int:
    from ..store import load_run

    run = load_run(args.run_dir)
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
        **{k.replace("_", " "): v for k, v in run.summary.items() if k != "status"},
        "fvcore dense MACs": run.info.get("fvcore_dense_macs"),
    }
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k:<{width}}  {_fmt(v)}")
    return 0

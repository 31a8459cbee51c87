"""`asfp-explorer export RUN_DIR`: the physically smaller model, optionally benchmarked."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="build the compact model of a run (and time it)")
    p.add_argument("run_dir")
    p.add_argument("--benchmark", action="store_true",
                   help="measure dense vs compact latency at batch 1, 64 and 256")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine.trainer import resolve_device
    from ..export import export_compact
    from ..store import load_model

    device = resolve_device(args.device)
    model, masks, input_size = load_model(args.run_dir)
    out = Path(args.run_dir) / "export"
    out.mkdir(exist_ok=True)
    summary = export_compact(model.to(device), {n: m.to(device) for n, m in masks.items()},
                             input_size, out, run_benchmark=args.benchmark, device=device)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"compact model   {out / summary['file']}")
    print(f"conv MACs       {summary['dense_macs']:,} -> {summary['compact_macs']:,} "
          f"(-{summary['mac_reduction_percent']:.1f} %)")
    print(f"parameters      {summary['dense_params']:,} -> {summary['compact_params']:,}")
    print(f"max |compact - masked| = {summary['max_abs_error']:.2e} "
          f"({summary['relative_error']:.1e} of max |masked|)")
    for row in summary.get("benchmark", {}).get("batches", []):
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()))
    return 0

"""`asfp-explorer export RUN_DIR`: the physically smaller model, optionally benchmarked and
written as ONNX."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="build the compact model of a run (and time it)")
    p.add_argument("run_dir")
    p.add_argument("--benchmark", action="store_true",
                   help="measure dense vs compact latency at batch 1, 64 and 256 (median and "
                        "spread over alternating repeats after warm-up)")
    p.add_argument("--onnx", action="store_true",
                   help="also write export/compact.onnx and check it with onnxruntime against "
                        "the masked model (needs: pip install 'asfp-explorer[onnx]')")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _range(row: Mapping[str, Any], key: str, fmt: str) -> str:
    """`median [q1-q3]` of one benchmark field."""
    return f"{row[key]:{fmt}} [{row[key + '_q1']:{fmt}}-{row[key + '_q3']:{fmt}}]"


def benchmark_table(bench: Mapping[str, Any]) -> list[str]:
    """The benchmark as text lines: median [IQR] per batch size, and how it was measured."""
    flush = ", denormals flushed to zero" if bench.get("flush_denormal") else ""
    lines = [f"benchmark on {bench['device_name']} ({bench['device']}, {bench['threads']} threads, "
             f"torch {bench['torch']}{flush})",
             "  latency in ms: median [q1-q3] over alternating dense/compact repeats after warm-up",
             f"  {'batch':>5}  {'dense ms':>22}  {'compact ms':>22}  {'speed-up':>20}  "
             f"{'min-max speed-up':>16}  {'repeats':>7}  {'warm-up':>8}"]
    for r in bench["batches"]:
        warm = f"{r['warmup_rounds']}" + ("" if r.get("settled", True) else "*")
        extremes = f"{r['speedup_min']:.2f}-{r['speedup_max']:.2f}x"
        lines.append(f"  {r['batch_size']:>5}  {_range(r, 'dense_ms', '.3g'):>22}  "
                     f"{_range(r, 'compact_ms', '.3g'):>22}  {_range(r, 'speedup', '.2f') + 'x':>20}  "
                     f"{extremes:>16}  {r['repeats']:>7}  {warm:>8}")
    if not all(r.get("settled", True) for r in bench["batches"]):
        lines.append("  * timings had not settled when the warm-up time ran out (a busy machine?)")
    return lines


def run(args) -> int:
    import torch

    from ..engine.trainer import resolve_device
    from ..export import export_compact, onnx_available
    from ..export.onnx_export import INSTALL_HINT, OnnxExportError
    from ..store import load_model

    if args.onnx and not onnx_available():  # before any work
        print(f"asfp-explorer export: --onnx needs the optional packages onnx and onnxruntime; "
              f"{INSTALL_HINT}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    model, masks, input_size = load_model(args.run_dir)
    out = Path(args.run_dir) / "export"
    out.mkdir(exist_ok=True)
    try:
        with warnings.catch_warnings():  # this process runs nothing else
            # The ONNX exporter's notes (constant folding of strided slices, in-place index
            # ops) and the tracer's note that ConstantInputMap's cached branch is fixed: the
            # file is for the run's input size, which the onnxruntime check confirms.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            summary = export_compact(model.to(device), {n: m.to(device) for n, m in masks.items()},
                                     input_size, out, run_benchmark=args.benchmark, device=device,
                                     onnx=args.onnx)
    except OnnxExportError as e:
        print(f"asfp-explorer export: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"compact model   {out / summary['file']}")
    print(f"conv MACs       {summary['dense_macs']:,} -> {summary['compact_macs']:,} "
          f"(-{summary['mac_reduction_percent']:.1f} %)")
    print(f"parameters      {summary['dense_params']:,} -> {summary['compact_params']:,}")
    print(f"max |compact - masked| = {summary['max_abs_error']:.2e} "
          f"({summary['relative_error']:.1e} of max |masked|, the saved file reloaded)")
    if "onnx" in summary:
        o = summary["onnx"]
        print(f"ONNX            {out / o['file']} (opset {o['opset']}); onnxruntime {o['onnxruntime']}: "
              f"max |onnx - masked| = {o['max_abs_error']:.2e} ({o['relative_error']:.1e} of max |masked|)")
    if "benchmark" in summary:
        print("\n".join(benchmark_table(summary["benchmark"])))
    return 0

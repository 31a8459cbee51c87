"""Do `asfp-explorer export --benchmark` and `Dashboard.export()` agree, and how much do
repeated measurements spread?

Trains one short run (or takes `--run RUN_DIR`), then alternates the two ways of timing its
compact model `--repeats` times: the CLI in a fresh process (as a user types it) and a
replayed dashboard's Export in this process (as the notebook does it). Both call the same
`export_compact(..., run_benchmark=True)`; this checks that nothing around it (a fresh
interpreter, the notebook's threads, the dashboard's widgets) changes the result.

Prints, per batch size, the speed-up each way: the median over the repeats of each repeat's
median, the range of those medians (the run-to-run spread), and the widest IQR one repeat
reported (the within-run spread). The two agree when their run-to-run ranges overlap; the
difference of their medians is printed beside the widest IQR. Printed, never asserted: timings depend on the machine and its load.

    python benchmarks/export_agreement.py [--repeats 5] [--model resnet20] [--dataset digits]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(run_dir: Path, model: str, dataset: str, data_path: str | None, epochs: int) -> None:
    cmd = [sys.executable, "-m", "asfp_explorer", "train", "--model", model, "--dataset", dataset,
           "--epochs", str(epochs), "--ratio", "0.4", "--out", str(run_dir), "--quiet"]
    if data_path:
        cmd += ["--data-path", data_path]
    subprocess.run(cmd, check=True)


def by_cli(run_dir: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "asfp_explorer", "export", str(run_dir),
                          "--benchmark", "--json"], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout)["benchmark"]["batches"]


def by_dashboard(run_dir: Path) -> list[dict]:
    from asfp_explorer.viz.dashboard import Dashboard
    from asfp_explorer.viz.speedup import read_export_summary

    (run_dir / "export" / "export.json").unlink(missing_ok=True)  # only this export's result
    dash = Dashboard.replay(run_dir, fvcore=False)
    thread = dash.export(benchmark=True)
    if thread is None:
        raise SystemExit("the dashboard refused to export: " + dash.controls.message.value)
    thread.join()
    summary = read_export_summary(run_dir)
    dash.close()
    if summary is None:
        raise SystemExit("the dashboard's export failed: " + dash.controls.message.value)
    return summary["benchmark"]["batches"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="an ended run folder (default: train a short one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-path")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else Path(tmp) / "run"
        if not args.run:
            train(run_dir, args.model, args.dataset, args.data_path, args.epochs)
        results: dict[str, list[list[dict]]] = {"CLI export --benchmark": [],
                                                "Dashboard.export()": []}
        t0 = time.perf_counter()
        for i in range(args.repeats):
            ways = [("CLI export --benchmark", by_cli), ("Dashboard.export()", by_dashboard)]
            for name, fn in ways if i % 2 == 0 else ways[::-1]:  # alternate which goes first
                results[name].append(fn(run_dir))
            print(f"repeat {i + 1}/{args.repeats} done ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    import torch

    print(f"{args.model} on {args.dataset}, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats each way, alternating")
    print("\n| batch | way | speed-up: median of medians | range of medians | widest IQR "
          "in one repeat | settled |")
    print("|---|---|---|---|---|---|")
    sizes = [row["batch_size"] for row in next(iter(results.values()))[0]]
    medians = {}
    iqrs: dict[int, float] = {}
    for b in sizes:
        for name, runs in results.items():
            rows = [next(r for r in run if r["batch_size"] == b) for run in runs]
            m = [r["speedup"] for r in rows]
            iqr = max(r["speedup_q3"] - r["speedup_q1"] for r in rows)
            iqrs[b] = max(iqrs.get(b, 0.0), iqr)
            settled = sum(r["settled"] for r in rows)
            medians[(b, name)] = (statistics.median(m), min(m), max(m))
            print(f"| {b} | {name} | {statistics.median(m):.3f}x | {min(m):.3f}-{max(m):.3f} | "
                  f"{iqr:.3f} | {settled}/{len(rows)} |")
    print()
    names = list(results)
    for b in sizes:
        (ma, loa, hia), (mb, lob, hib) = medians[(b, names[0])], medians[(b, names[1])]
        overlap = max(loa, lob) <= min(hia, hib)
        print(f"batch {b}: medians differ by {abs(ma - mb):.3f}x; the run-to-run ranges "
              f"{'overlap' if overlap else 'DO NOT overlap'}; widest IQR {iqrs[b]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

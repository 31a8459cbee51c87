"""The compact model's measured speed-up as a small HTML table (dashboard and report).

Input: the summary `export.export_compact` returns and writes to `RUN_DIR/export/export.json`.
Latency in milliseconds (median of repeats), throughput in images per second, MACs are conv
multiply-accumulates at batch 1.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping


def read_export_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """`RUN_DIR/export/export.json`, or None where the run was never exported."""
    path = Path(run_dir) / "export" / "export.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def speedup_html(summary: Mapping[str, Any]) -> str:
    """A table: dense vs compact latency and throughput per batch size, beside the MAC cut."""
    mac_cut = summary["mac_reduction_percent"]
    head = (f"<b>Compact model</b>: conv MACs {summary['dense_macs']:,} → "
            f"{summary['compact_macs']:,} (−{mac_cut:.1f} %, theoretical), parameters "
            f"{summary['dense_params']:,} → {summary['compact_params']:,}; "
            f"max |compact − masked| = {summary['relative_error']:.1e} of max |masked|")
    bench = summary.get("benchmark")
    if not bench:
        return head + "<br><span style='color:#555'>not benchmarked</span>"
    def spread(r: Mapping[str, Any], key: str, unit: str = "") -> str:
        """median, and below it the quartiles (q1–q3), where the summary has them"""
        cell = f"{r[key]:.2f}{unit}"
        if f"{key}_q1" in r:  # summaries written before the spread was measured lack it
            cell += (f"<br><span style='color:#777;font-size:85%'>{r[key + '_q1']:.2f}–"
                     f"{r[key + '_q3']:.2f}{unit}</span>")
        return cell

    rows = "".join(
        f"<tr><td>{r['batch_size']}</td><td>{spread(r, 'dense_ms')}</td><td>{spread(r, 'compact_ms')}</td>"
        f"<td>{r['dense_images_per_s']:,.0f}</td><td>{r['compact_images_per_s']:,.0f}</td>"
        f"<td><b>{spread(r, 'speedup', '×')}</b></td><td>{r['time_reduction_percent']:.1f} %</td>"
        f"<td>{mac_cut:.1f} %</td></tr>"
        for r in bench["batches"])
    device = html.escape(f"{bench['device_name']} ({bench['device']}, {bench['threads']} threads, "
                         f"torch {bench['torch']}"
                         + (", denormals flushed to zero" if bench.get("flush_denormal") else "") + ")")
    return (head + f"<br><span style='color:#555'>measured on {device}; latency in ms: median "
            "of alternating dense/compact repeats after warm-up, quartiles (q1–q3) below</span>"
            "<table style='border-collapse:collapse;text-align:right' cellpadding='4'>"
            "<tr><th>batch</th><th>dense ms</th><th>compact ms</th><th>dense img/s</th>"
            "<th>compact img/s</th><th>speed-up</th><th>time saved</th><th>MACs saved</th></tr>"
            + rows + "</table>")

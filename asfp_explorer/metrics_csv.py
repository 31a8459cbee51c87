"""A run's metrics.jsonl as one CSV table: a row per epoch, a column per value.

Scalar records keep their metrics.jsonl names and units (accuracies and ratios as fractions,
MACs as multiply-accumulates of conv layers, seconds); per-layer records become one column
per layer, named `key/layer` (e.g. `dead/layer1.0.conv1`). A value a line lacks (an older
run, or null in the record) is an empty cell.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping, TextIO


def metrics_columns(lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """Column names in order of first appearance; per-layer dicts expand to key/layer."""
    columns: dict[str, None] = {}
    for m in lines:
        for key, value in m.items():
            if isinstance(value, Mapping):
                for layer in value:
                    columns[f"{key}/{layer}"] = None
            else:
                columns[key] = None
    return list(columns)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)  # 0/1 reads as a number in every spreadsheet
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return value


def write_metrics_csv(lines: list[Mapping[str, Any]], out: TextIO) -> int:
    """Write `lines` (metrics.jsonl records) to `out` as CSV; returns the number of columns."""
    columns = metrics_columns(lines)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for m in lines:
        row = []
        for col in columns:
            key, _, layer = col.partition("/")
            value = m.get(key)
            if layer:
                value = value.get(layer) if isinstance(value, Mapping) else None
            row.append(_cell(value))
        writer.writerow(row)
    return len(columns)


def metrics_csv_text(lines: list[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    write_metrics_csv(lines, buf)
    return buf.getvalue()

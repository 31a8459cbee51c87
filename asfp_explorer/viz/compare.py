"""Compare runs, and write static HTML reports that open with no server and no internet.

Runs whose configurations differ only in the seed form one group, drawn as mean ± std.
Reports use the dashboard's own figure functions, so a stored run looks as it did live.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..store import RunData, load_run
from .figures import View, dashboard_figure, layer_explorer_figure
from .speedup import read_export_summary, speedup_html

RunLike = Any  # RunData, a run directory (str or Path), or anything with a `.run` RunData
PALETTE = qualitative.Plotly


# ------------------------------------------------------------------ grouping

def as_run(x: RunLike) -> RunData:
    """A RunData from a RunData, a run directory or a Dashboard (its live record)."""
    if isinstance(x, RunData):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load_run(x)
    if isinstance(getattr(x, "run", None), RunData):
        return x.run
    raise TypeError(f"runs: {type(x).__name__} is not a RunData, run directory or Dashboard")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _identity(run: RunData) -> tuple:
    """What makes runs replicates of each other: the config without the seed, plus any
    parameter changes made during the run (a steered run is its own experiment)."""
    flat = _flat(run.config)
    flat.pop("training.seed", None)
    changes = tuple(json.dumps(e.get("changes"), sort_keys=True) + f"@{e['epoch']}"
                    for e in run.events if e.get("event") == "parameters_changed")
    return tuple(sorted(flat.items())), changes


@dataclass
class Group:
    label: str
    runs: list[RunData]
    colour: str

    def stack(self, key: str | Callable[[RunData], np.ndarray], scale: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, mean, std) of one metric (a metrics key, or a function of a run giving one
        value per epoch) over the group's runs; epochs that some runs have not reached
        (stopped early) average over the runs that did."""
        epochs = sorted({m["epoch"] for r in self.runs for m in r.metrics})
        idx = {e: i for i, e in enumerate(epochs)}
        a = np.full((len(self.runs), len(epochs)), np.nan)
        for j, r in enumerate(self.runs):
            for m, v in zip(r.metrics, r.column(key) if isinstance(key, str) else key(r)):
                a[j, idx[m["epoch"]]] = v * scale
        with np.errstate(all="ignore"):
            ok = ~np.all(np.isnan(a), axis=0)
            mean = np.full(len(epochs), np.nan)
            std = np.zeros(len(epochs))
            mean[ok] = np.nanmean(a[:, ok], axis=0)
            std[ok] = np.nanstd(a[:, ok], axis=0)
        return np.array(epochs, float), mean, std

    def finals(self, key: str) -> np.ndarray:
        return np.array([r.metrics[-1].get(key) if r.metrics else np.nan for r in self.runs],
                        dtype=float)


def group_runs(runs: Iterable[RunLike], labels: Sequence[str] | None = None) -> list[Group]:
    """Group replicates (same config but the seed); label each group by what sets it apart."""
    data = [as_run(r) for r in runs]
    if not data:
        raise ValueError("runs: nothing to compare; give at least one run")
    order: dict[tuple, list[RunData]] = {}
    for r in data:
        order.setdefault(_identity(r), []).append(r)
    keys = list(order)
    flats = [dict(k[0]) for k in keys]
    differing = sorted({k for f in flats for k in f if len({str(g.get(k)) for g in flats}) > 1})
    groups = []
    for i, key in enumerate(keys):
        members = order[key]
        if labels is not None and i < len(labels):
            label = labels[i]
        elif differing:
            label = ", ".join(f"{k.split('.')[-1]}={flats[i].get(k)}" for k in differing)
        else:
            label = members[0].name if len(keys) > 1 or len(members) == 1 else "runs"
        if key[1]:
            label += " (steered)"
        if len(members) > 1:
            label += f" (n={len(members)})"
        groups.append(Group(label, members, PALETTE[i % len(PALETTE)]))
    return groups


# ------------------------------------------------------------------ figures

def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _band(fig: go.Figure, g: Group, x, mean, std, row: int, col: int, first: bool,
          hover: str) -> None:
    n = len(g.runs)
    if n > 1:
        ok = ~np.isnan(mean)
        xs, lo, hi = x[ok], (mean - std)[ok], (mean + std)[ok]
        fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                                 fill="toself", fillcolor=_rgba(g.colour, 0.18),
                                 line=dict(width=0), hoverinfo="skip", showlegend=False,
                                 legendgroup=g.label), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=g.label,
                             legendgroup=g.label, showlegend=first,
                             line=dict(color=g.colour, width=2), marker=dict(size=4),
                             customdata=std,
                             hovertemplate=f"{html.escape(g.label)}<br>epoch %{{x}}: "
                                           f"%{{y:.2f}}{' ± %{customdata:.2f}' if n > 1 else ''}"
                                           f" {hover}<extra></extra>"),
                  row=row, col=col)


def compare_figure(runs: Iterable[RunLike], labels: Sequence[str] | None = None) -> go.Figure:
    """Accuracy, prune ratio, MACs and revivals per epoch overlaid, and final accuracy vs
    MAC reduction; groups of seeds as mean ± std."""
    groups = group_runs(runs, labels)
    fig = make_subplots(rows=3, cols=2, vertical_spacing=0.1, horizontal_spacing=0.1,
                        subplot_titles=["Test accuracy after masking (%)", "Prune ratio (%)",
                                        "Conv MACs, exact (% of dense)",
                                        "Filters revived per epoch",
                                        "Final accuracy vs MAC reduction", ""],
                        specs=[[{}, {}], [{}, {}], [{}, {"type": "table"}]])
    for g in groups:
        dense = np.array([float(r.info.get("dense_macs") or np.nan) for r in g.runs])
        x, m, s = g.stack("test_acc_masked", 100)
        _band(fig, g, x, m, s, 1, 1, True, "%")
        x, m, s = g.stack("prune_ratio", 100)
        _band(fig, g, x, m, s, 1, 2, False, "%")
        x, m, s = g.stack("exact_macs", 100 / np.nanmean(dense))
        _band(fig, g, x, m, s, 2, 1, False, "% of dense")
        x, m, s = g.stack("revived_total")
        _band(fig, g, x, m, s, 2, 2, False, "filters")
        acc = 100 * g.finals("test_acc_masked")
        red = 100 * (1 - g.finals("exact_macs") / dense)
        paper = 100 * (1 - g.finals("paper_macs") / dense)
        fig.add_trace(go.Scatter(x=red, y=acc, mode="markers", showlegend=False,
                                 legendgroup=g.label, marker=dict(color=g.colour, size=6,
                                                                  opacity=0.45),
                                 hovertemplate=f"{html.escape(g.label)}: %{{y:.2f}} % at "
                                               "−%{x:.1f} % MACs<extra>one run</extra>"),
                      row=3, col=1)
        fig.add_trace(go.Scatter(
            x=[np.nanmean(red)], y=[np.nanmean(acc)], mode="markers", showlegend=False,
            legendgroup=g.label, marker=dict(color=g.colour, size=13, symbol="diamond",
                                             line=dict(color="white", width=1)),
            error_x=dict(type="data", array=[np.nanstd(red)], visible=len(g.runs) > 1),
            error_y=dict(type="data", array=[np.nanstd(acc)], visible=len(g.runs) > 1),
            customdata=[[np.nanmean(paper)]],
            hovertemplate=f"{html.escape(g.label)}: %{{y:.2f}} % at −%{{x:.1f}} % MACs exact, "
                          "−%{customdata[0]:.1f} % paper convention<extra>mean</extra>"),
            row=3, col=1)
    rows = summary_rows(groups)
    fig.add_trace(go.Table(
        columnwidth=[3, 0.8, 1.5] + [1] * (len(rows[0]) - 3),
        header=dict(values=list(rows[0]), fill_color="#eef2f7", align="left",
                    font=dict(size=11)),
        cells=dict(values=[[r[k] for r in rows] for k in rows[0]], align="left",
                   font=dict(size=11), fill_color=[[_rgba(g.colour, 0.12) for g in groups]])),
        row=3, col=2)
    fig.update_xaxes(title_text="epochs completed", row=1)
    fig.update_xaxes(title_text="epochs completed", row=2)
    fig.update_xaxes(title_text="MAC reduction, exact (%)", row=3, col=1)
    fig.update_yaxes(title_text="final test acc (%)", row=3, col=1)
    fig.update_yaxes(range=[0, 105], row=2, col=1)
    fig.update_layout(height=1050, template="plotly_white", hovermode="closest",
                      legend=dict(orientation="h", x=0, y=1.06, xanchor="left", yanchor="bottom"),
                      margin=dict(l=60, r=30, t=90, b=50))
    return fig


def summary_rows(groups: Sequence[Group]) -> list[dict[str, str]]:
    """One row per group: final numbers as mean ± std over its runs."""
    def ms(a: np.ndarray, fmt: str) -> str:
        a = a[~np.isnan(a)]
        if len(a) == 0:
            return "-"
        return format(a.mean(), fmt) + (f" ± {format(a.std(), fmt)}" if len(a) > 1 else "")

    rows = []
    for g in groups:
        dense = np.array([float(r.info.get("dense_macs") or np.nan) for r in g.runs])
        best = np.array([r.summary.get("best_test_acc_masked") or np.nan for r in g.runs], float)
        rows.append({
            "group": g.label,
            "runs": str(len(g.runs)),
            "status": ", ".join(sorted({r.status for r in g.runs})),
            "epochs": ms(np.array([r.metrics[-1]["epoch"] if r.metrics else np.nan
                                   for r in g.runs], float), ".0f"),
            "final acc %": ms(100 * g.finals("test_acc_masked"), ".2f"),
            "best acc %": ms(100 * best, ".2f"),
            "MACs −% exact": ms(100 * (1 - g.finals("exact_macs") / dense), ".1f"),
            "MACs −% paper": ms(100 * (1 - g.finals("paper_macs") / dense), ".1f"),
        })
    return rows


def compare(runs: Iterable[RunLike], labels: Sequence[str] | None = None) -> go.Figure:
    """In a notebook: the comparison figure of `runs` (run dirs, RunData or Dashboards)."""
    return compare_figure(runs, labels)


# ------------------------------------------------------------------ static HTML

def _page(title: str, parts: Sequence[str]) -> str:
    return ("<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
            "table.s{border-collapse:collapse;font-size:13px}"
            "table.s td,table.s th{border:1px solid #ddd;padding:3px 8px;text-align:left}"
            "h1{font-size:20px}h2{font-size:16px;margin-top:28px}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _figures_html(figs: Sequence[go.Figure]) -> list[str]:
    # plotly.js once, inline, so the page needs neither a server nor the internet.
    return [f.to_html(full_html=False, include_plotlyjs=(i == 0), config={"responsive": True})
            for i, f in enumerate(figs)]


def _table(rows: Mapping[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                    for k, v in rows.items())
    return f"<table class='s'>{cells}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _write(path: str | os.PathLike, text: str) -> Path:
    from ..store import atomic_write_bytes

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, text.encode("utf-8"))
    return p


def report_figures(run: RunLike, fvcore_macs: Mapping[int, float] | None = None
                   ) -> dict[str, go.Figure]:
    """A report's figures by name: "run" (the dashboard's panels), "layers" (one layer at a
    time, from a menu) and "diagnostics" (dead filters, BN kick, accuracy gap)."""
    from .diagnostics import diagnostics_figure

    r = as_run(run)
    return {"run": dashboard_figure(r, View(fvcore_macs=fvcore_macs or {}))[0],
            "layers": layer_explorer_figure(r), "diagnostics": diagnostics_figure(r)[0]}


def compare_figures(runs: Iterable[RunLike], labels: Sequence[str] | None = None
                    ) -> dict[str, go.Figure]:
    """A comparison's figures by name: "compare" and "diagnostics"."""
    from .diagnostics import compare_diagnostics_figure

    data = [as_run(r) for r in runs]
    return {"compare": compare_figure(data, labels),
            "diagnostics": compare_diagnostics_figure(data, labels)}


DIAGNOSTICS_NOTE = ("<p style='color:#555'>Dead: filters the previous mask zeroed that are still "
                    "exactly zero (no gradient reaches them). BN kick: previously pruned filters "
                    "that came back far larger than the kept ones. Accuracy lost to the mask: "
                    "test accuracy just before the mask minus just after it. See docs/why.md."
                    "</p>")


def report_html(run: RunLike, path: str | os.PathLike,
                fvcore_macs: Mapping[int, float] | None = None) -> Path:
    """One run's figures as a self-contained HTML page (inline plotly.js, no server)."""
    r = as_run(run)
    c = r.config
    figures = report_figures(r, fvcore_macs)
    head = {
        "status": r.status, "message": r.summary.get("message"),
        "model": c.get("model", {}).get("name"), "data set": c.get("data", {}).get("name"),
        "method": c.get("pruning", {}).get("method"),
        "criterion": c.get("pruning", {}).get("criterion"),
        "target prune ratio": c.get("pruning", {}).get("prune_ratio"),
        "D": c.get("pruning", {}).get("d"), "epochs": c.get("training", {}).get("epochs"),
        "seed": c.get("training", {}).get("seed"), "device": r.info.get("device"),
        **{k.replace("_", " "): v for k, v in r.summary.items()
           if k not in ("status", "message", "config", "changes")},  # both shown above/below
    }
    changes = [e for e in r.events if e.get("event") == "parameters_changed"]
    parts = [f"<h1>ASFP explorer report: {html.escape(r.name)}</h1>", _table(head),
             "<p style='color:#555'>MACs = multiply-accumulates of conv layers. Paper "
             "convention: fractional channels as in the SFP/ASFP tables; exact: what the masks "
             "remove, equal to fvcore's count of the compact model.</p>"]
    if changes:
        parts.append("<h2>Parameter changes during the run</h2><ul>" + "".join(
            f"<li>from epoch {e['epoch'] + 1}: {html.escape(json.dumps(e['changes']))}</li>"
            for e in changes) + "</ul>")
    html_figs = _figures_html(list(figures.values()))
    parts += ["<h2>Run</h2>", html_figs[0], "<h2>Layers (choose one in the menu)</h2>",
              html_figs[1], "<h2>Diagnostics: why soft pruning does what it does</h2>",
              DIAGNOSTICS_NOTE, html_figs[2]]
    exported = read_export_summary(r.path) if r.path is not None else None
    if exported is not None:  # `asfp-explorer export RUN_DIR` was run
        parts += ["<h2>The compact model</h2>", speedup_html(exported)]
    return _write(path, _page(f"report: {r.name}", parts))


def compare_html(runs: Iterable[RunLike], path: str | os.PathLike,
                 labels: Sequence[str] | None = None) -> Path:
    """The comparison of `runs` as a self-contained HTML page."""
    data = [as_run(r) for r in runs]
    figures = compare_figures(data, labels)
    names = ", ".join(html.escape(r.name) for r in data)
    html_figs = _figures_html(list(figures.values()))
    parts = [f"<h1>ASFP explorer: comparing {len(data)} runs</h1>",
             f"<p style='color:#555'>{names}. Runs that differ only in the seed are one group "
             "(mean ± std). MACs = multiply-accumulates of conv layers.</p>",
             html_figs[0], "<h2>Diagnostics: why soft pruning does what it does</h2>",
             DIAGNOSTICS_NOTE, html_figs[1]]
    return _write(path, _page("comparison", parts))

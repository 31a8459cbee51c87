"""Run data -> the diagnostics figure: why soft pruning does what it does. Pure, like figures.py.

Three mechanisms, each read from the per-epoch records (metrics.jsonl keys in brackets):

- dead filters [dead, dead_total]: filters the previous mask zeroed that are still exactly
  zero now. SFP's first mask falls before any training, when BN's beta is 0, so a zeroed
  filter gets exactly zero gradient for ever: the map lights up from epoch 1 on.
- the BN kick [pruned_norm_median, kept_norm_median]: a zeroed filter feeding train-mode BN
  gets a gradient amplified by about gamma/sqrt(eps) and jumps back to a norm far above the
  kept filters'; the ratio map turns red and the "previously pruned" median line soars.
- stale BN statistics [acc_gap]: accuracy before the mask minus after it, in points.

Plus the realised prune ratio [realised_ratio] beside the scheduled one. Runs recorded before
these keys existed draw empty panels titled "not recorded in this run". A live run, a stored
run and a run still being written are all `RunData`, drawn by the same functions.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

from ..store import RunData
from .figures import (
    C_KEPT,
    C_PLAN,
    C_PRUNED,
    C_REALISED,
    C_REVIVED,
    Layout,
    Panel,
    TraceData,
    View,
    _build,
    _epoch_axis,
    _f32,
    epochs_of,
    fill,
)

C_DEAD = "#7b3294"
DIAGNOSTIC_KEYS = ("realised_ratio", "dead", "dead_total", "pruned_norm_median",
                   "kept_norm_median", "acc_gap")
NOT_RECORDED = " — not recorded in this run"
KICK_LIMIT = 2.0  # the ratio map's colour range, log10 units: 1/100 .. 100


# ------------------------------------------------------------------ reading the records

def recorded(run: RunData, key: str) -> bool:
    """True when any epoch of `run` carries `key` (older runs carry none of the diagnostics)."""
    return any(key in m for m in run.metrics)


def _planned_epochs(run: RunData) -> int:
    last = run.metrics[-1]["epoch"] if run.metrics else 0
    return max(int(run.config.get("training", {}).get("epochs", 0) or 0), last, 1)


def layer_matrix(run: RunData, key: str) -> np.ndarray:
    """layers x epochs of a per-layer record ({layer: number or null}); NaN where missing."""
    names = run.layer_names
    z = np.full((len(names), len(run.metrics)), np.nan)
    for j, m in enumerate(run.metrics):
        per_layer = m.get(key) or {}
        for i, name in enumerate(names):
            v = per_layer.get(name)
            if v is not None:
                z[i, j] = float(v)
    return z


def previously_pruned(run: RunData) -> np.ndarray:
    """layers x epochs: filters the mask before each epoch's re-mask had pruned (0 at the
    first record: nothing was pruned before it)."""
    pruned = layer_matrix(run, "pruned")
    out = np.zeros_like(pruned)
    out[:, 1:] = np.nan_to_num(pruned[:, :-1])
    return out


def dead_fraction(run: RunData) -> np.ndarray:
    """layers x epochs: dead filters / filters pruned at the previous mask (NaN where none were
    pruned, so an unpruned layer stays blank rather than reading 0 % dead)."""
    dead, before = layer_matrix(run, "dead"), previously_pruned(run)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(before > 0, dead / np.where(before > 0, before, 1), np.nan)


def _nanmedian_columns(z: np.ndarray) -> np.ndarray:
    """Median over layers per epoch, ignoring NaN; NaN where a whole column is missing."""
    out = np.full(z.shape[1], np.nan)
    ok = ~np.all(np.isnan(z), axis=0)
    if ok.any():
        out[ok] = np.nanmedian(z[:, ok], axis=0)
    return out


def median_norms(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch, the median over layers of each layer's median ℓ2 norm, for filters the
    previous mask pruned and for filters it kept (just before re-masking)."""
    return (_nanmedian_columns(layer_matrix(run, "pruned_norm_median")),
            _nanmedian_columns(layer_matrix(run, "kept_norm_median")))


def kick_ratio(run: RunData) -> np.ndarray:
    """layers x epochs: log10(previously-pruned median norm / kept median norm), clipped to
    ±KICK_LIMIT. +2: the pruned filters came back 100x larger (the BN kick); -2: they stayed
    (near) zero (dead). NaN where a layer had no pruned or no kept filters."""
    pruned = layer_matrix(run, "pruned_norm_median")
    kept = layer_matrix(run, "kept_norm_median")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log10(pruned / kept)
    r[np.isnan(pruned) | np.isnan(kept) | (kept <= 0)] = np.nan
    return np.clip(r, -KICK_LIMIT, KICK_LIMIT)


def network_series(run: RunData) -> dict[str, np.ndarray]:
    """One number per epoch for each mechanism (what `compare` averages over seeds).

    dead_total (filters), pruned_norm / kept_norm (ℓ2, median over layers of layer medians),
    acc_gap (percentage points), realised_ratio (%).
    """
    pruned_norm, kept_norm = median_norms(run)
    return {"dead_total": run.column("dead_total"), "pruned_norm": pruned_norm,
            "kept_norm": kept_norm, "acc_gap": 100 * run.column("acc_gap"),
            "realised_ratio": 100 * run.column("realised_ratio")}


# ------------------------------------------------------------------ panels

def _titled(title: str, *keys: str):
    def title_of(run: RunData, view: View) -> str:
        missing = run.metrics and not all(recorded(run, k) for k in keys)
        return title + (NOT_RECORDED if missing else "")
    return title_of


def _epochs_x(run: RunData, pad: float) -> dict[str, dict]:
    t = _planned_epochs(run)
    return {"x": _epoch_axis(t, pad)}


def _layer_axes(run: RunData, view: View) -> dict[str, dict]:
    # Every layer named (plotly would label only every other one of 19), top to bottom.
    names = run.layer_names
    return {**_epochs_x(run, 0.5),
            "y": {"tickmode": "array", "tickvals": list(names), "ticktext": list(names),
                  "autorange": "reversed", "tickfont": {"size": 9}}}


def _line_axes(run: RunData, view: View) -> dict[str, dict]:
    t = _planned_epochs(run)
    return {"x": _epoch_axis(t, 0.02 * t)}


def _headroom_axes(*series: Callable[[RunData], np.ndarray]):
    """Line axes whose y range starts at 0 and leaves the top 40 % free for the legend."""
    def axes(run: RunData, view: View) -> dict[str, dict]:
        top = max((float(np.nanmax(s(run), initial=0.0)) for s in series), default=0.0)
        return {**_line_axes(run, view), "y": {"range": [0, max(top, 1e-3) * 1.6]}}
    return axes


# --- dead filters, per layer

def _dead_map_traces() -> list[go.BaseTraceType]:
    return [go.Heatmap(name="dead", zmin=0, zmax=1,
                       colorscale=[[0.0, "#f4f1f8"], [1.0, C_DEAD]],
                       colorbar=dict(title=dict(text="dead", side="right"), thickness=10,
                                     tickformat=".0%"),
                       hovertemplate="epoch %{x}, %{y}: %{customdata[0]} of %{customdata[1]} "
                                     "pruned filters still exactly zero<extra></extra>")]


def dead_map_data(run: RunData, view: View) -> list[TraceData]:
    if not run.metrics or not run.layer_names or not recorded(run, "dead"):
        return [{"x": _f32([]), "y": [], "z": np.zeros((0, 0)), "customdata": []}]
    dead = np.nan_to_num(layer_matrix(run, "dead")).astype(np.int32)
    before = previously_pruned(run).astype(np.int32)
    return [{"x": epochs_of(run), "y": list(run.layer_names),
             "z": np.round(dead_fraction(run), 4),
             "customdata": np.stack([dead, before], axis=-1)}]


DEAD_MAP = Panel("Dead filters: pruned at the previous mask, still exactly zero",
                 _dead_map_traces, dead_map_data, "epochs completed", "", legend=False,
                 axes=_layer_axes,
                 title_of=_titled("Dead filters: pruned at the previous mask, still exactly zero",
                                  "dead"))


# --- dead filters, in total

def _dead_total_traces() -> list[go.BaseTraceType]:
    return [
        go.Scatter(name="pruned at the previous mask", mode="lines",
                   line=dict(color=C_PRUNED, dash="dash"),
                   hovertemplate="epoch %{x}: %{y} pruned before<extra></extra>"),
        go.Scatter(name="still exactly zero (dead)", mode="lines+markers",
                   line=dict(color=C_DEAD, width=2.5), marker=dict(size=5),
                   hovertemplate="epoch %{x}: %{y} dead<extra></extra>"),
        go.Scatter(name="revived (kept again)", mode="lines+markers",
                   line=dict(color=C_REVIVED), marker=dict(size=5),
                   hovertemplate="epoch %{x}: %{y} revived<extra></extra>"),
    ]


def dead_total_data(run: RunData, view: View) -> list[TraceData]:
    e = epochs_of(run)
    before = previously_pruned(run).sum(axis=0) if run.layer_names else np.full(len(e), np.nan)
    if not recorded(run, "dead_total"):
        e = _f32([])
        return [{"x": e, "y": e}] * 3
    return [{"x": e, "y": _f32(before)},
            {"x": e, "y": _f32(run.column("dead_total"))},
            {"x": e, "y": _f32(run.column("revived_total"))}]


DEAD_TOTAL = Panel("Filters pruned at the previous mask: dead or revived", _dead_total_traces,
                   dead_total_data, "epochs completed", "filters",
                   axes=_headroom_axes(lambda r: previously_pruned(r).sum(axis=0)),
                   legend_corner="top-right",
                   title_of=_titled("Filters pruned at the previous mask: dead or revived",
                                    "dead_total"))


# --- the BN kick: norms

def _norm_traces() -> list[go.BaseTraceType]:
    return [
        go.Scatter(name="previously pruned", mode="lines+markers",
                   line=dict(color=C_PRUNED, width=2.5), marker=dict(size=5),
                   hovertemplate="epoch %{x}: median ℓ2 %{y:.3g}<extra>previously pruned"
                                 "</extra>"),
        go.Scatter(name="kept", mode="lines+markers", line=dict(color=C_KEPT, width=2.5),
                   marker=dict(size=5),
                   hovertemplate="epoch %{x}: median ℓ2 %{y:.3g}<extra>kept</extra>"),
    ]


def norm_data(run: RunData, view: View) -> list[TraceData]:
    e = epochs_of(run)
    if not recorded(run, "pruned_norm_median"):
        e = _f32([])
        return [{"x": e, "y": e}] * 2
    pruned, kept = median_norms(run)
    return [{"x": e, "y": _f32(pruned)}, {"x": e, "y": _f32(kept)}]


NORM_TITLE = "BN kick: filter ℓ2 norms before re-masking (median over layers)"
NORMS_PANEL = Panel(NORM_TITLE, _norm_traces, norm_data, "epochs completed", "median ℓ2 norm",
                    axes=_headroom_axes(lambda r: np.concatenate(median_norms(r))),
                    title_of=_titled(NORM_TITLE, "pruned_norm_median", "kept_norm_median"))


# --- the BN kick: per layer

def _kick_map_traces() -> list[go.BaseTraceType]:
    return [go.Heatmap(name="kick", zmin=-KICK_LIMIT, zmax=KICK_LIMIT, zmid=0,
                       colorscale="RdBu_r",
                       colorbar=dict(title=dict(text="pruned ÷ kept", side="right"),
                                     thickness=10, tickvals=[-2, -1, 0, 1, 2],
                                     ticktext=["≤1/100", "1/10", "1", "10", "≥100"]),
                       hovertemplate="epoch %{x}, %{y}: previously pruned %{customdata[0]:.3g}"
                                     ", kept %{customdata[1]:.3g}<extra>median ℓ2</extra>")]


def kick_map_data(run: RunData, view: View) -> list[TraceData]:
    if not run.metrics or not run.layer_names or not recorded(run, "pruned_norm_median"):
        return [{"x": _f32([]), "y": [], "z": np.zeros((0, 0)), "customdata": []}]
    pruned = layer_matrix(run, "pruned_norm_median")
    kept = layer_matrix(run, "kept_norm_median")
    return [{"x": epochs_of(run), "y": list(run.layer_names), "z": np.round(kick_ratio(run), 3),
             "customdata": np.round(np.stack([pruned, kept], axis=-1), 4)}]


KICK_TITLE = "BN kick per layer: previously-pruned ÷ kept median norm"
KICK_MAP = Panel(KICK_TITLE, _kick_map_traces, kick_map_data, "epochs completed", "",
                 legend=False, axes=_layer_axes,
                 title_of=_titled(KICK_TITLE, "pruned_norm_median", "kept_norm_median"))


# --- stale BN statistics: the accuracy gap

def _gap_traces() -> list[go.BaseTraceType]:
    return [go.Bar(name="unmasked − masked", marker=dict(color=C_PLAN),
                   hovertemplate="epoch %{x}: %{y:.2f} points lost to the mask<extra></extra>")]


def gap_data(run: RunData, view: View) -> list[TraceData]:
    if not recorded(run, "acc_gap"):
        return [{"x": _f32([]), "y": _f32([])}]
    return [{"x": epochs_of(run), "y": _f32(100 * run.column("acc_gap"))}]


GAP_TITLE = "Accuracy lost to the mask: before − after (points)"
GAP = Panel(GAP_TITLE, _gap_traces, gap_data, "epochs completed", "accuracy points",
            legend=False, axes=_line_axes, title_of=_titled(GAP_TITLE, "acc_gap"))


# --- scheduled vs realised prune ratio

def _ratio_traces() -> list[go.BaseTraceType]:
    return [
        go.Scatter(name="scheduled P(e)", mode="lines", line=dict(color=C_PLAN, width=2),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>scheduled</extra>"),
        go.Scatter(name="held by the masks", mode="markers",
                   marker=dict(color=C_REALISED, size=7, symbol="circle-open",
                               line=dict(width=2)),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>realised</extra>"),
    ]


def ratio_data(run: RunData, view: View) -> list[TraceData]:
    e = epochs_of(run)
    realised = run.column("realised_ratio") if recorded(run, "realised_ratio") else np.array([])
    return [{"x": e, "y": _f32(100 * run.column("prune_ratio"))},
            {"x": e if len(realised) else _f32([]), "y": _f32(100 * realised)}]


RATIO_TITLE = "Prune ratio: scheduled vs held by the masks (%)"
RATIO = Panel(RATIO_TITLE, _ratio_traces, ratio_data, "epochs completed", "prune ratio (%)",
              axes=_headroom_axes(lambda r: 100 * r.column("prune_ratio"),
                                  lambda r: 100 * r.column("realised_ratio")),
              title_of=_titled(RATIO_TITLE, "realised_ratio"))


DIAGNOSTIC_PANELS: tuple[Panel, ...] = (DEAD_MAP, DEAD_TOTAL, NORMS_PANEL, KICK_MAP, GAP, RATIO)
DIAGNOSTIC_GRID = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2))


# ------------------------------------------------------------------ figures

def diagnostics_figure(run: RunData | None = None, *, widget_class: type | None = None
                       ) -> tuple[go.Figure, Layout]:
    """The six diagnostics panels in one 3 x 2 figure (with `widget_class`, a live widget);
    returns the figure and the `Layout` that `update_diagnostics` needs."""
    run = run if run is not None else RunData()
    fig, layout = _build(DIAGNOSTIC_PANELS, DIAGNOSTIC_GRID, 3, 2, 980, widget_class,
                         horizontal_spacing=0.2, vertical_spacing=0.11)
    update_diagnostics(fig, layout, run)
    return fig, layout


def update_diagnostics(fig: go.Figure, layout: Layout, run: RunData) -> None:
    """Assign every diagnostics trace from `run` (inside `fig.batch_update()` for a widget)."""
    fill(fig, layout, DIAGNOSTIC_PANELS, run, View())


def compare_diagnostics_figure(runs: Iterable[Any], labels: Sequence[str] | None = None) -> go.Figure:
    """The mechanisms of several runs overlaid; groups of seeds as mean ± std."""
    from plotly.subplots import make_subplots

    from .compare import _band, group_runs

    groups = group_runs(runs, labels)
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.14, horizontal_spacing=0.1,
                        subplot_titles=["Dead filters (pruned before, still exactly zero)",
                                        "Accuracy lost to the mask (points)",
                                        "Previously pruned filters: median ℓ2 norm",
                                        "Kept filters: median ℓ2 norm"])
    # (series, row, col, hover unit, the record it is read from)
    cells = [("dead_total", 1, 1, "filters", "dead_total"), ("acc_gap", 1, 2, "points", "acc_gap"),
             ("pruned_norm", 2, 1, "ℓ2", "pruned_norm_median"),
             ("kept_norm", 2, 2, "ℓ2", "kept_norm_median")]
    for g in groups:
        for k, (key, row, col, unit, _) in enumerate(cells):
            x, mean, std = g.stack(lambda r, key=key: network_series(r)[key])
            _band(fig, g, x, mean, std, row, col, k == 0, unit)
    for i, (*_, record) in enumerate(cells):
        if not any(recorded(r, record) for g in groups for r in g.runs):
            fig.layout.annotations[i].text += NOT_RECORDED
    fig.update_xaxes(title_text="epochs completed")
    fig.update_layout(height=720, template="plotly_white", hovermode="closest",
                      legend=dict(orientation="h", x=0, y=1.08, xanchor="left", yanchor="bottom"),
                      margin=dict(l=60, r=30, t=90, b=50))
    return fig

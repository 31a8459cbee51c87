"""Run data -> plotly figures. Pure: no widgets, no threads, no torch.

Every panel is a fixed list of traces. A panel's *style* (trace types, colours, legends) is
built once; its *data* (`x`, `y`, `z`, ... as numpy arrays) is computed from a `RunData` by a
`*_data` function. A static figure is style + data; the live dashboard builds the same style
into a FigureWidget and, on every refresh, assigns only the data inside one `batch_update()`.
So a stored run, a run being written and a live run are drawn by the same code.

Units: prune ratios and accuracies are shown in percent; MACs are multiply-accumulates of
conv layers (fvcore's convention: one fused multiply-add = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..config import METHODS
from ..schedules import schedule_values
from ..store import RunData

# One colour per meaning, the same in every figure.
C_PLAN = "#1f77b4"
C_SFP = "#ff7f0e"
C_REALISED = "#2ca02c"
C_KEPT = "#4c78a8"
C_PRUNED = "#e45756"
C_REVIVED = "#f2b701"
C_LOSS = "#7f7f7f"
C_DENSE = "#9e9e9e"
MAC_UNIT = "MACs (multiply-accumulates of conv layers)"
NORM_BINS = 24  # fixed, so a live update never changes the number of bars

TraceData = dict[str, Any]  # property name -> value (arrays as numpy)


# ------------------------------------------------------------------ what to draw

@dataclass(frozen=True)
class Plan:
    """Schedule parameters to preview: the run's own, or the sliders' before/while training."""

    method: str = "asfp"
    prune_ratio: float = 0.4
    d: float = 0.125
    epochs: int = 10

    @classmethod
    def of_run(cls, run: RunData) -> "Plan":
        p, t = run.config.get("pruning", {}), run.config.get("training", {})
        return cls(p.get("method", "asfp"), float(p.get("prune_ratio", 0.0)),
                   float(p.get("d", 0.125)), int(t.get("epochs", 1)))

    def values(self) -> np.ndarray:
        """P(e) for e = 0..epochs; raises ValueError (one line) for parameters with no schedule."""
        schedule = METHODS[self.method][0]
        return np.asarray(schedule_values(schedule, self.epochs, self.prune_ratio, self.d))


@dataclass(frozen=True)
class View:
    """Choices that are not part of the run: which layer and epoch to show, what to preview."""

    layer: str | None = None  # None: the first prunable layer
    epoch: int | None = None  # None: the latest epoch
    plan: Plan | None = None  # None: the run's own configuration
    fvcore_macs: Mapping[int, float] = field(default_factory=dict)  # epoch -> compact-model MACs


def epochs_of(run: RunData) -> np.ndarray:
    return np.array([m["epoch"] for m in run.metrics], dtype=np.float32)


def _f32(a) -> np.ndarray:
    # float32 1-D arrays travel to the browser as binary buffers (int64 would become lists).
    return np.asarray(a, dtype=np.float32)


def _epoch_axis(epochs: int, pad: float) -> dict[str, Any]:
    """x axis over 0..epochs with whole-number ticks, about ten of them."""
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if epochs / s <= 10)
    return {"range": [-pad, epochs + pad], "tickmode": "linear", "tick0": 0, "dtick": step}


def _plan(run: RunData, view: View) -> Plan:
    return view.plan if view.plan is not None else Plan.of_run(run)


def _layer_index(run: RunData, view: View) -> int | None:
    names = run.layer_names
    if not names:
        return None
    if view.layer in names:
        return names.index(view.layer)
    return 0


def _epoch_index(run: RunData, view: View) -> int | None:
    if not run.metrics:
        return None
    if view.epoch is None:
        return len(run.metrics) - 1
    epochs = [m["epoch"] for m in run.metrics]
    return epochs.index(view.epoch) if view.epoch in epochs else len(run.metrics) - 1


def _last_epoch(run: RunData) -> int:
    return run.metrics[-1]["epoch"] if run.metrics else 0


# ------------------------------------------------------------------ panels

@dataclass(frozen=True)
class Panel:
    """A fixed list of styled traces, a function that fills them, and axis titles."""

    title: str
    traces: Callable[[], list[go.BaseTraceType]]  # styled, empty
    data: Callable[[RunData, View], list[TraceData]]  # one dict per trace, same order
    x_title: str
    y_title: str
    y2_title: str | None = None  # a secondary y axis
    secondary: tuple[bool, ...] = ()  # per trace: on the secondary y axis
    legend: bool = True
    legend_corner: str = "top-left"  # where in the panel its legend sits; "top-wide":
    # one row across the top (the panel's axes leave room for it)
    axes: Callable[[RunData, View], dict[str, dict]] | None = None  # "x"/"y"/"y2" -> axis props
    title_of: Callable[[RunData, View], str] | None = None  # a title that follows the data


# --- schedule

def _schedule_traces() -> list[go.BaseTraceType]:
    return [
        go.Scatter(name="planned P(e)", mode="lines", line=dict(color=C_PLAN, width=2.5),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>planned</extra>"),
        go.Scatter(name="constant (SFP)", mode="lines", line=dict(color=C_SFP, dash="dash"),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>SFP</extra>"),
        go.Scatter(name="applied", mode="markers", marker=dict(color=C_REALISED, size=5),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>applied</extra>"),
        go.Scatter(name="now", mode="markers", showlegend=False,
                   marker=dict(color=C_PLAN, size=12, symbol="diamond",
                               line=dict(color="white", width=1.5)),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>now</extra>"),
    ]


def schedule_data(run: RunData, view: View) -> list[TraceData]:
    """Planned P(e) in %, SFP's constant P beside it, the ratios applied so far, a marker now."""
    plan = _plan(run, view)
    planned = 100 * plan.values()
    e = np.arange(plan.epochs + 1, dtype=np.float32)
    now = min(_last_epoch(run), plan.epochs)
    return [
        {"x": e, "y": _f32(planned)},
        {"x": _f32([0, plan.epochs]), "y": _f32([100 * plan.prune_ratio] * 2)},
        {"x": epochs_of(run), "y": _f32(100 * run.column("prune_ratio"))},
        {"x": _f32([now]), "y": _f32([planned[now]])},
    ]


def _schedule_axes(run: RunData, view: View) -> dict[str, dict]:
    plan = _plan(run, view)
    top = max(100 * plan.prune_ratio, float(np.nanmax(100 * run.column("prune_ratio"), initial=0)))
    return {"x": _epoch_axis(plan.epochs, 0.02 * plan.epochs),
            "y": {"range": [0, max(top * 1.1, 1.0)]}}


# Every schedule rises to its target (SFP's line runs along the top): the bottom-right is free.
SCHEDULE = Panel("Schedule: prune ratio per epoch", _schedule_traces, schedule_data,
                 "epochs completed", "prune ratio (%)", axes=_schedule_axes,
                 legend_corner="bottom-right")


# --- accuracy and loss

def _accuracy_traces() -> list[go.BaseTraceType]:
    return [
        go.Scatter(name="test acc, masked", mode="lines+markers",
                   line=dict(color=C_PLAN, width=2.5), marker=dict(size=5),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>masked</extra>"),
        go.Scatter(name="test acc, before mask", mode="markers",
                   marker=dict(color="#9ecae1", size=7, symbol="circle-open", line=dict(width=2)),
                   hovertemplate="epoch %{x}: %{y:.2f} %<extra>unmasked</extra>"),
        go.Scatter(name="train loss", mode="lines", line=dict(color=C_LOSS, dash="dot"),
                   hovertemplate="epoch %{x}: %{y:.4f}<extra>train loss</extra>"),
    ]


def accuracy_data(run: RunData, view: View) -> list[TraceData]:
    """Test accuracy (%) after and before each mask update, and the training loss."""
    e = epochs_of(run)
    return [
        {"x": e, "y": _f32(100 * run.column("test_acc_masked"))},
        {"x": e, "y": _f32(100 * run.column("test_acc_unmasked"))},
        {"x": e, "y": _f32(run.column("train_loss"))},
    ]


def _accuracy_axes(run: RunData, view: View) -> dict[str, dict]:
    t = _plan(run, view).epochs
    # Accuracy rises from bottom-left to top-right and the loss falls from top-left to
    # bottom-right, so every corner holds data: both axes leave a band on top for the legend.
    loss = float(np.nanmax(run.column("train_loss"), initial=0.0)) if run.metrics else 0.0
    return {"x": _epoch_axis(t, 0.02 * t),
            "y": {"range": [0, 100 * ACCURACY_HEADROOM], "tickvals": list(range(0, 101, 20))},
            "y2": {"range": [0, max(loss, 1e-3) * ACCURACY_HEADROOM]}}


ACCURACY_HEADROOM = 1.3  # axis tops at 1.3x the data's: the top ~23 % holds the legend


ACCURACY = Panel("Accuracy and loss", _accuracy_traces, accuracy_data, "epochs completed",
                 "test accuracy (%)", y2_title="train loss", secondary=(False, False, True),
                 axes=_accuracy_axes, legend_corner="top-wide")


# --- FLOPs

def _flops_traces() -> list[go.BaseTraceType]:
    tmpl = "epoch %{x}: %{y:.4s} MACs, %{customdata:.1f} % of dense"
    return [
        go.Scatter(name="dense", mode="lines", line=dict(color=C_DENSE, dash="dash"),
                   hovertemplate="dense: %{y:.4s} MACs<extra></extra>"),
        go.Scatter(name="paper convention", mode="lines", line=dict(color=C_SFP),
                   hovertemplate=tmpl + "<extra>paper</extra>"),
        go.Scatter(name="exact (masks)", mode="lines+markers", line=dict(color=C_PLAN, width=2.5),
                   marker=dict(size=5), hovertemplate=tmpl + "<extra>exact</extra>"),
        go.Scatter(name="fvcore, compact model", mode="markers",
                   marker=dict(color="black", size=9, symbol="x-thin", line=dict(width=2)),
                   hovertemplate=tmpl + "<extra>fvcore</extra>"),
        # Invisible twin of "exact" in % of dense: it makes plotly draw the right-hand axis.
        go.Scatter(name="share", mode="lines", line=dict(width=0), showlegend=False,
                   hoverinfo="skip", opacity=0),
    ]


def flops_data(run: RunData, view: View) -> list[TraceData]:
    """Conv MACs per epoch: dense baseline, paper convention, exact, fvcore on the compact model."""
    e = epochs_of(run)
    dense = float(run.info.get("dense_macs") or 0) or np.nan
    t = _plan(run, view).epochs
    paper, exact = run.column("paper_macs"), run.column("exact_macs")
    fv_e = np.array(sorted(k for k in view.fvcore_macs if k in set(e.astype(int).tolist())),
                    dtype=np.float32)
    fv = np.array([view.fvcore_macs[int(k)] for k in fv_e], dtype=np.float64)
    return [
        {"x": _f32([0, t]), "y": _f32([dense, dense])},
        {"x": e, "y": _f32(paper), "customdata": _f32(100 * paper / dense)},
        {"x": e, "y": _f32(exact), "customdata": _f32(100 * exact / dense)},
        {"x": fv_e, "y": _f32(fv), "customdata": _f32(100 * fv / dense)},
        {"x": e, "y": _f32(100 * exact / dense)},
    ]


def _flops_axes(run: RunData, view: View) -> dict[str, dict]:
    t = _plan(run, view).epochs
    dense = float(run.info.get("dense_macs") or 0)
    # Both axes start at 0 and end 5 % above dense, so the % axis reads the MAC curves.
    y = {"range": [0, 1.05 * dense]} if dense else {"rangemode": "tozero"}
    return {"x": _epoch_axis(t, 0.02 * t), "y": y,
            "y2": {"range": [0, 105], "ticksuffix": " %", "showgrid": False,
                   "tickmode": "linear", "tick0": 0, "dtick": 20}}


FLOPS = Panel("FLOPs: conv MACs per epoch", _flops_traces, flops_data, "epochs completed",
              "MACs", y2_title="% of dense", secondary=(False, False, False, False, True),
              axes=_flops_axes, legend_corner="bottom-left")  # the curves start top-left


# --- filter norms

def _norms_traces() -> list[go.BaseTraceType]:
    return [
        go.Bar(name="kept", marker=dict(color=C_KEPT), offsetgroup="norms",
               hovertemplate="norm %{x:.3f}: %{y} kept<extra></extra>"),
        go.Bar(name="pruned", marker=dict(color=C_PRUNED), offsetgroup="norms",
               hovertemplate="norm %{x:.3f}: %{y} pruned<extra></extra>"),
        go.Scatter(name="threshold", mode="lines", line=dict(color="black", dash="dash"),
                   hovertemplate="threshold %{x:.3f}<extra></extra>"),
    ]


def norm_threshold(norms: np.ndarray, mask: np.ndarray) -> float | None:
    """The ℓ2 norm that separates pruned from kept filters, if one does.

    Halfway between the largest pruned and the smallest kept norm. None when nothing is
    pruned, or when the sets overlap (FPGM ranks by distance, not norm; or the masks are
    from an earlier update and revived filters have grown since).
    """
    pruned, kept = norms[~mask], norms[mask]
    if len(pruned) == 0 or len(kept) == 0 or pruned.max() > kept.min():
        return None
    return float(0.5 * (pruned.max() + kept.min()))


def norms_data(run: RunData, view: View) -> list[TraceData]:
    """Histogram of one layer's filter ℓ2 norms just before its mask was applied."""
    li, ei = _layer_index(run, view), _epoch_index(run, view)
    if li is None or ei is None or ei >= len(run.norms):
        empty = _f32([])
        return [{"x": empty, "y": empty, "width": empty}] * 2 + [{"x": empty, "y": empty}]
    norms = np.asarray(run.norms[ei][li], dtype=np.float64)
    mask = np.asarray(run.masks[ei][li], dtype=bool)
    hi = float(norms.max()) if len(norms) else 1.0
    edges = np.linspace(0.0, hi * 1.0001 if hi > 0 else 1.0, NORM_BINS + 1)
    kept, _ = np.histogram(norms[mask], bins=edges)
    pruned, _ = np.histogram(norms[~mask], bins=edges)
    centres, width = _f32(0.5 * (edges[1:] + edges[:-1])), _f32(np.diff(edges))
    t = norm_threshold(norms, mask)
    top = float(max((kept + pruned).max(), 1))
    line = {"x": _f32([t, t]), "y": _f32([0, top * 1.05])} if t is not None else \
        {"x": _f32([]), "y": _f32([])}
    return [{"x": centres, "y": _f32(kept), "width": width},
            {"x": centres, "y": _f32(pruned), "width": width}, line]


def norms_title(run: RunData, view: View) -> str:
    li, ei = _layer_index(run, view), _epoch_index(run, view)
    if li is None or ei is None:
        return "Filter ℓ2 norms"
    m = run.metrics[ei]
    n = len(run.masks[ei][li]) if ei < len(run.masks) else 0
    pruned = n - int(np.sum(run.masks[ei][li])) if n else 0
    return f"Filter ℓ2 norms: {run.layer_names[li]}, epoch {m['epoch']} ({pruned}/{n} pruned)"


NORMS = Panel("Filter ℓ2 norms", _norms_traces, norms_data, "filter ℓ2 norm (before masking)",
              "filters", legend_corner="top-right", title_of=lambda r, v: norms_title(r, v))


# --- mask evolution, one layer

MASK_COLOURS = [[0.0, C_PRUNED], [1 / 3, C_PRUNED], [1 / 3, "#dfe7f2"], [2 / 3, "#dfe7f2"],
                [2 / 3, C_REVIVED], [1.0, C_REVIVED]]


def _layer_mask_traces() -> list[go.BaseTraceType]:
    # No colour bar (it would crowd the neighbouring panel): the title carries the key.
    return [go.Heatmap(name="masks", zmin=0, zmax=2, colorscale=MASK_COLOURS, showscale=False,
                       hovertemplate="epoch %{x}, filter %{y}: %{z}<extra>0 pruned, 1 kept, "
                                     "2 revived</extra>")]


def layer_mask_matrix(run: RunData, layer_index: int) -> np.ndarray:
    """filters x epochs: 0 pruned, 1 kept, 2 kept again after being pruned the epoch before."""
    if not run.masks:
        return np.zeros((0, 0), dtype=np.int8)
    m = np.stack([np.asarray(ms[layer_index], bool) for ms in run.masks], axis=1)
    z = m.astype(np.int8)
    z[:, 1:][m[:, 1:] & ~m[:, :-1]] = 2
    return z


def layer_mask_data(run: RunData, view: View) -> list[TraceData]:
    li = _layer_index(run, view)
    if li is None or not run.masks:
        return [{"x": _f32([]), "y": _f32([]), "z": np.zeros((0, 0))}]
    z = layer_mask_matrix(run, li)
    return [{"x": epochs_of(run), "y": _f32(np.arange(z.shape[0])), "z": z}]


def _layer_mask_axes(run: RunData, view: View) -> dict[str, dict]:
    t = _plan(run, view).epochs
    return {"x": _epoch_axis(t, 0.5)}


def layer_mask_title(run: RunData, view: View) -> str:
    li = _layer_index(run, view)
    name = run.layer_names[li] if li is not None else "one layer"
    key = " ".join(f'<span style="color:{c}">■</span> {w}'
                   for c, w in ((C_PRUNED, "pruned"), ("#b8c7dc", "kept"), (C_REVIVED, "revived")))
    return f"Masks of {name} (filters × epochs): {key}"


LAYER_MASK = Panel("Masks of one layer (filters × epochs)", _layer_mask_traces, layer_mask_data,
                   "epochs completed", "filter", legend=False, axes=_layer_mask_axes,
                   title_of=layer_mask_title)


# --- mask evolution, whole network

def _network_mask_traces() -> list[go.BaseTraceType]:
    return [
        go.Heatmap(name="pruned fraction", colorscale="Blues", zmin=0,
                   colorbar=dict(title=dict(text="pruned", side="right"), thickness=10,
                                 tickformat=".0%"),
                   hovertemplate="epoch %{x}, %{y}: %{z:.1%} pruned, "
                                 "%{customdata} revived<extra></extra>"),
        go.Scatter(name="revivals", mode="markers", showlegend=False,
                   marker=dict(color=C_REVIVED, symbol="circle", opacity=0.85,
                               line=dict(color="#5a4500", width=0.5)),
                   hovertemplate="epoch %{x}, %{y}: %{text} revived<extra></extra>"),
    ]


def network_mask_data(run: RunData, view: View) -> list[TraceData]:
    """layers x epochs pruned fraction; a yellow dot where filters revived (size ~ count)."""
    names = run.layer_names
    if not run.masks or not names:
        empty = _f32([])
        return [{"x": empty, "y": [], "z": np.zeros((0, 0)), "customdata": []},
                {"x": empty, "y": [], "text": [], "marker": {"size": empty}}]
    # Rounded float64: 2-D arrays travel as JSON lists, where float32 noise would cost bytes.
    z = np.round([[1.0 - float(np.mean(ms[i])) for ms in run.masks] for i in range(len(names))], 4)
    revived = np.array([[m.get("revived", {}).get(n, 0) for m in run.metrics] for n in names],
                       dtype=np.int32)
    e = epochs_of(run)
    li, ei = np.nonzero(revived)
    counts = revived[li, ei]
    return [
        {"x": e, "y": list(names), "z": z, "customdata": revived,
         "zmax": max(float(z.max()), 0.05)},
        {"x": e[ei], "y": [names[i] for i in li], "text": counts.astype(str).tolist(),
         "marker": {"size": _f32(np.minimum(3 + np.sqrt(counts), 9))}},
    ]


def _network_mask_axes(run: RunData, view: View) -> dict[str, dict]:
    """Every layer's name on the y axis (plotly would skip about every other one); small
    print where there are many, every k-th name beyond 40 layers."""
    n = len(run.layer_names)
    step = 1 if n <= 40 else -(-n // 40)
    return {**_layer_mask_axes(run, view),
            "y": {"tickmode": "array", "tickvals": list(run.layer_names)[::step],
                  "tickfont": {"size": 9 if n <= 24 else 7}}}


NETWORK_MASK = Panel("Pruned fraction per layer (layers × epochs)", _network_mask_traces,
                     network_mask_data, "epochs completed", "", legend=False,
                     axes=_network_mask_axes)


PANELS: tuple[Panel, ...] = (SCHEDULE, ACCURACY, FLOPS, NORMS, LAYER_MASK, NETWORK_MASK)
# (row, col) of each panel in the dashboard grid, same order as PANELS.
GRID = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2))


# ------------------------------------------------------------------ assembling figures

@dataclass
class Layout:
    """Where each panel's traces sit in a figure: trace index ranges and axis names."""

    slices: list[slice]
    axes: list[dict[str, str]]  # per panel: {"x": "xaxis3", "y": "yaxis5", "y2": "yaxis6"}


def _build(panels: Sequence[Panel], grid: Sequence[tuple[int, int]], rows: int, cols: int,
           height: int, widget_class: type | None, **subplot_kw) -> tuple[go.Figure, Layout]:
    specs = [[None] * cols for _ in range(rows)]
    for p, (r, c) in zip(panels, grid):
        specs[r - 1][c - 1] = {"secondary_y": p.y2_title is not None}
    fig = make_subplots(rows=rows, cols=cols, specs=specs,
                        subplot_titles=[p.title for p in panels], **subplot_kw)
    if widget_class is not None:
        fig = widget_class(fig)
    slices, axes = [], []
    legends = {}
    for k, (p, (r, c)) in enumerate(zip(panels, grid)):
        start = len(fig.data)
        legend = f"legend{k + 2}"  # one legend per panel, inside its corner
        for i, tr in enumerate(p.traces()):
            sec = bool(p.secondary[i]) if p.secondary else False
            if p.legend:
                tr.legend = legend
            fig.add_trace(tr, row=r, col=c, secondary_y=sec if p.y2_title else None)
        slices.append(slice(start, len(fig.data)))
        sp = fig.get_subplot(r, c)
        names = {"x": sp.xaxis.plotly_name, "y": sp.yaxis.plotly_name}
        if p.y2_title:
            names["y2"] = fig.get_subplot(r, c, secondary_y=True).yaxis.plotly_name
        axes.append(names)
        fig.layout[names["x"]].title.text = p.x_title
        fig.layout[names["y"]].title.text = p.y_title
        if p.y2_title:
            fig.layout[names["y2"]].title.text = p.y2_title
        xd, yd = fig.layout[names["x"]].domain, fig.layout[names["y"]].domain
        if p.legend:
            right, bottom = p.legend_corner.endswith("right"), p.legend_corner.startswith("bottom")
            legends[legend] = dict(x=xd[1] - 0.005 if right else xd[0] + 0.005,
                                   y=yd[0] + 0.005 if bottom else yd[1] - 0.005,
                                   xanchor="right" if right else "left",
                                   yanchor="bottom" if bottom else "top",
                                   bgcolor="rgba(255,255,255,0.7)",
                                   font=dict(size=10))
            if p.legend_corner == "top-wide":
                legends[legend].update(orientation="h", x=(xd[0] + xd[1]) / 2,
                                       xanchor="center")
        for tr in fig.data[slices[-1]]:
            if tr.type == "heatmap":  # colour bar beside its own subplot, not the figure's edge
                tr.colorbar.update(x=xd[1] + 0.005, xanchor="left", y=(yd[0] + yd[1]) / 2,
                                   len=yd[1] - yd[0], yanchor="middle")
    fig.update_layout(height=height, margin=dict(l=60, r=30, t=50, b=50), barmode="stack",
                      template="plotly_white", hovermode="closest", **legends)
    fig.update_annotations(font_size=13)
    return fig, Layout(slices, axes)


def fill(fig: go.Figure, layout: Layout, panels: Sequence[Panel], run: RunData, view: View,
         which: Sequence[int] | None = None) -> None:
    """Assign every trace's data (and the panels' axis ranges) from `run`; call inside
    `fig.batch_update()` for a widget so all of it travels as one message."""
    for k in (range(len(panels)) if which is None else which):
        p = panels[k]
        for tr, d in zip(fig.data[layout.slices[k]], p.data(run, view)):
            tr.update(d)
        if p.axes is not None:
            for key, props in p.axes(run, view).items():
                fig.layout[layout.axes[k][key]].update(props)
        if p.title_of is not None:
            fig.layout.annotations[k].text = p.title_of(run, view)


def dashboard_figure(run: RunData | None = None, view: View | None = None, *,
                     widget_class: type | None = None) -> tuple[go.Figure, Layout]:
    """All six panels in one 3 x 2 figure; with `widget_class` (a FigureWidget subclass) the
    live dashboard's single widget.

    Returns the figure and its `Layout`, which `fill` needs to update it in place.
    """
    run = run if run is not None else RunData()
    fig, layout = _build(PANELS, GRID, 3, 2, 1000, widget_class, horizontal_spacing=0.15,
                         vertical_spacing=0.09)
    fill(fig, layout, PANELS, run, view or View())
    return fig, layout


def panel_figure(panel: Panel, run: RunData, view: View | None = None,
                 height: int = 380) -> go.Figure:
    """One panel as its own figure."""
    fig, layout = _build([panel], [(1, 1)], 1, 1, height, None)
    fill(fig, layout, [panel], run, view or View())
    return fig


def schedule_figure(run: RunData | None = None, plan: Plan | None = None) -> go.Figure:
    """Planned prune ratio per epoch (and SFP's constant one) for `plan` or the run's config."""
    return panel_figure(SCHEDULE, run or RunData(), View(plan=plan))


def accuracy_figure(run: RunData) -> go.Figure:
    return panel_figure(ACCURACY, run)


def flops_figure(run: RunData, fvcore_macs: Mapping[int, float] | None = None) -> go.Figure:
    return panel_figure(FLOPS, run, View(fvcore_macs=fvcore_macs or {}))


def norms_figure(run: RunData, layer: str | None = None, epoch: int | None = None) -> go.Figure:
    return panel_figure(NORMS, run, View(layer=layer, epoch=epoch))


def layer_mask_figure(run: RunData, layer: str | None = None) -> go.Figure:
    height = max(300, 200 + 4 * _width(run, layer))  # ~4 px per filter row
    return panel_figure(LAYER_MASK, run, View(layer=layer), height=height)


def network_mask_figure(run: RunData) -> go.Figure:
    return panel_figure(NETWORK_MASK, run, height=max(320, 120 + 18 * len(run.layer_names)))


def _width(run: RunData, layer: str | None) -> int:
    """Filters in `layer` (16 when the run does not say)."""
    li, sizes = _layer_index(run, View(layer=layer)), run.info.get("layer_sizes")
    return int(sizes[li]) if li is not None and sizes else 16


def layer_explorer_figure(run: RunData, epoch: int | None = None) -> go.Figure:
    """Norm histogram and filter masks of every layer, with a dropdown to choose the layer.

    For static reports: every layer's traces are in the figure and the dropdown toggles their
    visibility in the browser, so no kernel is needed.
    """
    names = run.layer_names or [None]
    panels = [NORMS, LAYER_MASK]
    fig, layout = _build(panels, [(1, 1), (1, 2)], 1, 2, 460, None, horizontal_spacing=0.14)
    styled = list(fig.data)  # one styled set, already bound to its axes and legend
    traces, titles = [], []
    for i, name in enumerate(names):
        view = View(layer=name, epoch=epoch)
        for tr, d in zip(styled, NORMS.data(run, view) + LAYER_MASK.data(run, view)):
            new = type(tr)(tr)
            new.update(d)
            new.visible = i == 0
            traces.append(new)
        titles.append((norms_title(run, view), layer_mask_title(run, view)))
    fig.data = ()
    fig.add_traces(traces)
    fill_axes = LAYER_MASK.axes(run, View()) if LAYER_MASK.axes else {}
    for key, props in fill_axes.items():
        fig.layout[layout.axes[1][key]].update(props)
    per = len(styled)
    choices = [dict(label=str(name), method="update",
                    args=[{"visible": [j // per == i for j in range(len(traces))]},
                          {"annotations[0].text": titles[i][0],
                           "annotations[1].text": titles[i][1]}])
               for i, name in enumerate(names)]
    fig.layout.annotations[0].text, fig.layout.annotations[1].text = titles[0]
    if len(names) <= MENU_MAX_ITEMS:
        # An open dropdown lists every layer below itself (~21 px each): the figure grows
        # so the list ends inside it (19 layers overflowed the 460 px figure).
        height = max(460, 130 + 21 * len(names))
        above = 1 + 66 / (height - 160)  # 66 px above the plots, under the 110 px top margin
        fig.update_layout(updatemenus=[dict(buttons=choices, x=0.0, xanchor="left", y=above,
                                            yanchor="bottom", direction="down",
                                            showactive=True, pad={"b": 8})],
                          height=height, margin=dict(t=110))
    else:  # a slider scales to any number of layers; the current one is named above it
        fig.update_layout(sliders=[dict(steps=choices, active=0, x=0.0, len=1.0, y=1.02,
                                        yanchor="bottom", pad={"t": 0, "b": 10},
                                        currentvalue={"prefix": "layer: "},
                                        font={"color": "rgba(0,0,0,0)"})],
                          margin=dict(t=150))
    return fig


MENU_MAX_ITEMS = 30  # more layers than this get a slider instead of a dropdown

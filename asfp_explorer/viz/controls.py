"""The dashboard's controls: sliders, dropdowns, buttons and one-line messages.

Widgets only: this module knows how to read a `RunConfig` out of the controls and how to show
a message, not how to train. The dashboard wires the callbacks.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as w

from ..config import CRITERIA, DATASETS, METHODS, MODELS, ConfigError, RunConfig

# Controls that steer a run in progress: widget name -> (config section, field).
STEERING = {
    "method": ("pruning", "method"),
    "prune_ratio": ("pruning", "prune_ratio"),
    "d": ("pruning", "d"),
    "interval": ("pruning", "interval"),
    "criterion": ("pruning", "criterion"),
    "fpgm_norm_share": ("pruning", "fpgm_norm_share"),
    "adaptive_bn_batches": ("pruning", "adaptive_bn_batches"),
    "epochs": ("training", "epochs"),
}
# Fixed once a run starts (they define the model, the data, and what a mask zeroes).
IDENTITY = {"model": ("model", "name"), "dataset": ("data", "name"),
            "mask_bn": ("pruning", "mask_bn")}

_WIDE = w.Layout(width="320px")
_STYLE = {"description_width": "90px"}


def one_line(e: BaseException) -> str:
    """An exception as the single line the UI shows (never a traceback)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class Controls:
    """Sliders for target ratio, D, epochs, interval and the FPGM-mix norm share; dropdowns
    for method, criterion, model and data set; Start, Pause/Resume and Stop; a message line;
    the prediction line."""

    def __init__(self, config: RunConfig, models: tuple[str, ...] = MODELS):
        p, t = config.pruning, config.training
        self.widgets: dict[str, w.ValueWidget] = {
            "method": w.Dropdown(options=list(METHODS), value=p.method, description="method",
                                 layout=_WIDE, style=_STYLE),
            "criterion": w.Dropdown(options=list(CRITERIA), value=p.criterion,
                                    description="criterion", layout=_WIDE, style=_STYLE),
            "model": w.Dropdown(options=list(models), value=config.model.name,
                                description="model", layout=_WIDE, style=_STYLE),
            "dataset": w.Dropdown(options=[d for d in DATASETS if (d != "npz" or config.data.path)
                                           and (d != "imagefolder" or config.data.name == d)],
                                  value=config.data.name, description="data set",
                                  layout=_WIDE, style=_STYLE),
            "prune_ratio": w.FloatSlider(value=p.prune_ratio, min=0.0, max=0.9, step=0.01,
                                         description="target P", readout_format=".2f",
                                         layout=_WIDE, style=_STYLE),
            # Up to 0.9 on purpose: beyond 0.75 the asymptotic schedule has no solution, and
            # the message line says so (the spec wants a clear refusal, not a hidden limit).
            "d": w.FloatSlider(value=p.d, min=0.01, max=0.9, step=0.005, description="D",
                               readout_format=".3f", layout=_WIDE, style=_STYLE),
            "epochs": w.IntSlider(value=t.epochs, min=1, max=max(300, t.epochs),
                                  description="epochs", layout=_WIDE, style=_STYLE,
                                  continuous_update=False),
            "interval": w.IntSlider(value=p.interval, min=1, max=max(20, p.interval),
                                    description="interval", layout=_WIDE, style=_STYLE,
                                    continuous_update=False),
            "fpgm_norm_share": w.FloatSlider(value=p.fpgm_norm_share, min=0.0, max=1.0,
                                             step=0.05, description="norm share",
                                             readout_format=".2f", layout=_WIDE, style=_STYLE),
            # Remedies beyond the paper (0 / off = the paper's method).
            "adaptive_bn_batches": w.IntSlider(value=p.adaptive_bn_batches, min=0,
                                               max=max(100, p.adaptive_bn_batches),
                                               description="adaptive BN", layout=_WIDE,
                                               style=_STYLE, continuous_update=False),
            "mask_bn": w.Checkbox(value=p.mask_bn, description="mask BN with the filter",
                                  indent=False, layout=w.Layout(width="220px")),
        }
        for k in ("method", "criterion", "model", "dataset", "prune_ratio", "d", "epochs",
                  "interval", "fpgm_norm_share", "adaptive_bn_batches", "mask_bn"):
            self.widgets[k].tooltip = _TIPS[k]
        self.start = w.Button(description="Start", icon="play", button_style="success",
                              layout=w.Layout(width="100px"))
        self.pause = w.Button(description="Pause", icon="pause", disabled=True,
                              layout=w.Layout(width="100px"))
        self.stop = w.Button(description="Stop", icon="stop", button_style="danger",
                             disabled=True, layout=w.Layout(width="100px"))
        self.export = w.Button(description="Compact + time", icon="compress", disabled=True,
                               tooltip="build the physically smaller model of the ended run and "
                                       "measure its speed-up against the dense one",
                               layout=w.Layout(width="160px"))
        self.save = w.Button(description="Save figure", icon="download",
                             tooltip="write the figure as an image file (needs kaleido): "
                                     "run_dir/figures/dashboard-epoch-N.<format>",
                             layout=w.Layout(width="130px"))
        self.figure_format = w.Dropdown(options=["png", "svg", "pdf"], value="png",
                                        layout=w.Layout(width="70px"))
        self.prediction = w.HTML()
        self.message = w.HTML(layout=w.Layout(min_height="1.6em"))
        self.layer = w.Dropdown(options=[], description="layer", layout=_WIDE, style=_STYLE)
        self.running = False
        self.set_running(False)

    # ------------------------------------------------------------ layout

    def box(self) -> w.Widget:
        g = self.widgets
        return w.VBox([
            w.HBox([g["method"], g["criterion"], g["model"], g["dataset"]],
                   layout=w.Layout(flex_flow="row wrap")),
            w.HBox([g["prune_ratio"], g["d"], g["epochs"], g["interval"], g["fpgm_norm_share"]],
                   layout=w.Layout(flex_flow="row wrap")),
            w.HBox([w.HTML("<span style='color:#555'>beyond the paper:</span>"),
                    g["adaptive_bn_batches"], g["mask_bn"]],
                   layout=w.Layout(align_items="center", flex_flow="row wrap")),
            w.HBox([self.start, self.pause, self.stop, self.export, self.save,
                    self.figure_format, self.prediction],
                   layout=w.Layout(align_items="center", flex_flow="row wrap")),
            self.message,
        ])

    # ------------------------------------------------------------ values

    def value(self, name: str) -> Any:
        return self.widgets[name].value

    def set_value(self, name: str, value: Any) -> None:
        self.widgets[name].value = value

    def config(self, base: RunConfig) -> RunConfig:
        """`base` with the controls' values; raises ConfigError with a one-line message."""
        v = {k: x.value for k, x in self.widgets.items()}
        return base.with_changes(
            model={"name": v["model"]},
            data={"name": v["dataset"]},
            pruning={"method": v["method"], "prune_ratio": round(float(v["prune_ratio"]), 4),
                     "d": round(float(v["d"]), 4), "interval": int(v["interval"]),
                     "criterion": v["criterion"],
                     "fpgm_norm_share": round(float(v["fpgm_norm_share"]), 4),
                     "adaptive_bn_batches": int(v["adaptive_bn_batches"]),
                     "mask_bn": bool(v["mask_bn"])},
            training={"epochs": int(v["epochs"])},
        )

    def on_change(self, callback: Callable[[str, Any], None]) -> None:
        """Call `callback(name, new_value)` whenever a control's value changes."""
        for name, widget in self.widgets.items():
            widget.observe(lambda change, name=name: callback(name, change["new"]), names="value")

    # ------------------------------------------------------------ state

    def set_running(self, running: bool, paused: bool = False) -> None:
        """Enable what makes sense: identity controls only before a run, Pause/Stop during."""
        self.running = running
        for name in IDENTITY:
            self.widgets[name].disabled = running
        self.start.disabled = running
        if running:
            self.export.disabled = True
        self.pause.disabled = not running
        self.stop.disabled = not running
        self.pause.description = "Resume" if paused else "Pause"
        self.pause.icon = "play" if paused else "pause"
        # While a run is steered every slider value becomes a recorded change, so sliders
        # send only the value where they are released; before a run the preview follows them.
        for name in ("prune_ratio", "d", "fpgm_norm_share"):
            self.widgets[name].continuous_update = not running

    def disable_all(self) -> None:
        """For a replayed run: everything is shown, nothing can be changed."""
        for x in self.widgets.values():
            x.disabled = True
        self.start.disabled = self.pause.disabled = self.stop.disabled = True
        self.export.disabled = self.save.disabled = True

    def say(self, text: str, level: str = "info") -> None:
        """Show one line: info (grey), ok (green), warn (orange), error (red)."""
        colour = {"info": "#555", "ok": "#2e7d32", "warn": "#b26a00", "error": "#c62828"}[level]
        line = html.escape(text.splitlines()[0] if text else "")
        self.message.value = f'<span style="color:{colour}">{line}</span>'

    def try_config(self, base: RunConfig) -> RunConfig | None:
        try:
            return self.config(base)
        except ConfigError as e:
            self.say(one_line(e), "error")
            return None


_TIPS = {
    "method": "asfp: asymptotic schedule, soft; sfp: constant ratio, soft; hard-*: pruned "
              "filters never return; linear/cubic: gradual schedules",
    "criterion": "how filters are ranked: l2 / l1 norm, fpgm (distance to the geometric "
                 "median), fpgm-mix (norm first, then fpgm)",
    "model": "fixed once a run starts",
    "dataset": "fixed once a run starts",
    "prune_ratio": "fraction of each layer's filters zeroed at the end of training",
    "d": "asymptotic schedule: P(D*T) = 3/4 of the target; must be in (0, 0.75)",
    "epochs": "total epochs T; during a run it may grow or shrink to any value above the "
              "epochs already done",
    "interval": "epochs between mask updates (the last epoch always updates)",
    "fpgm_norm_share": "fpgm-mix only: share of the pruned filters picked by l2 norm, the rest "
                       "by distance (FPGM paper: 10 % of 40 % = 0.25)",
    "adaptive_bn_batches": "remedy beyond the paper: after each mask, re-estimate BN running "
                           "statistics from this many training batches (0 = off)",
    "mask_bn": "remedy beyond the paper: zero BN gamma and beta of pruned channels with the "
               "filter, so a pruned channel outputs exactly zero (fixed once a run starts)",
}

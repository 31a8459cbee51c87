"""The live dashboard: controls, a status line and one FigureWidget, training in the background.

    dash = Dashboard(config, run_dir="runs/asfp")
    dash.show()          # lays out the widgets and starts training in a background thread
    ...
    dash.wait()          # in a later cell: block until the run ends

Costs, by design (ARCHITECTURE.md, "The hot loop and the dashboard"):
- the observer on the training thread appends the event to a deque and sets a flag: a few
  microseconds, and it never waits on the browser;
- a refresher thread folds queued events into a `RunData` and redraws at most `refresh_hz`
  times a second; every refresh assigns a fixed set of traces inside one `batch_update()`,
  which `LiveFigure` sends as one comm message;
- one FigureWidget for all six panels (each FigureWidget ships plotly's ~5 MB bundle);
- fvcore's count of the compact model runs on its own worker thread (`compact_macs`).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from ..config import MODELS, ConfigError, RunConfig
from ..engine.events import Event, EventKind
from ..store import RunData, load_run
from .compact_macs import CompactMacsWorker
from .controls import STEERING, Controls, one_line
from .figures import PANELS, Plan, View, dashboard_figure, fill
from .speedup import read_export_summary, speedup_html

STATUS_LEVEL = {"finished": "ok", "stopped": "warn", "diverged": "error", "failed": "error"}
MAC_TIP = "MACs = multiply-accumulates of conv layers (fvcore&#39;s convention)"


class LiveFigure(go.FigureWidget):
    """A FigureWidget whose batch updates reach the browser as one comm message.

    plotly sends each `Plotly.update` as four widget state changes: two edit ids, the update,
    then None to clear it, i.e. four comm messages. Here the ids and the update are set
    inside `hold_sync()`, which ipywidgets sends as one message. The update is not cleared:
    every later one has new edit ids, so it always differs and is always sent, and a view
    opened later draws from `_widget_data`, which the front end keeps current.
    """

    def _send_update_msg(self, restyle_data, relayout_data, trace_indexes=None,
                         source_view_id=None):
        trace_indexes = self._normalize_trace_indexes(trace_indexes)
        with self.hold_sync():
            self._last_trace_edit_id += 1
            self._trace_edit_in_process = True
            self._last_layout_edit_id += 1
            self._layout_edit_in_process = True
            self._py2js_update = {
                "style_data": restyle_data,
                "layout_data": relayout_data,
                "style_traces": trace_indexes,
                "trace_edit_id": self._last_trace_edit_id,
                "layout_edit_id": self._last_layout_edit_id,
                "source_view_id": source_view_id,
            }


@dataclasses.dataclass
class DashboardStats:
    """What the dashboard costs: time in the observer (training thread) and in refreshes."""

    observer_ns: list[int] = dataclasses.field(default_factory=list)
    refresh_s: list[float] = dataclasses.field(default_factory=list)
    events: int = 0

    def summary(self) -> dict[str, float]:
        o = np.array(self.observer_ns, dtype=float) / 1e3
        r = np.array(self.refresh_s, dtype=float) * 1e3
        return {
            "events": self.events,
            "observer_us_mean": float(o.mean()) if len(o) else 0.0,
            "observer_us_max": float(o.max()) if len(o) else 0.0,
            "refreshes": len(r),
            "refresh_ms_mean": float(r.mean()) if len(r) else 0.0,
            "refresh_ms_max": float(r.max()) if len(r) else 0.0,
        }


def _available_models() -> tuple[str, ...]:
    from ..models import model_names

    known = set(model_names())
    return tuple(m for m in MODELS if m in known)


class Dashboard:
    """Controls, a progress line and live figures for one run at a time.

    `config`: the starting configuration (the controls edit a copy). `run_dir`: where the run
    is recorded (None: in memory only); `overwrite=True` lets Start replace an earlier run
    there. `refresh_hz`: the most redraws per second (0: only when `refresh()` is called).
    """

    def __init__(self, config: RunConfig | None = None, run_dir: str | Path | None = None, *,
                 overwrite: bool = False, refresh_hz: float = 4.0, fvcore: bool = True,
                 title: str | None = None):
        self.base = config or RunConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.overwrite = overwrite
        self.refresh_hz = refresh_hz
        self.fvcore = fvcore
        self.handle = None
        self.run = RunData()
        self.stats = DashboardStats()
        self._lock = threading.RLock()  # guards the figure, `run` and `view` across threads
        self._events: collections.deque[Event] = collections.deque()
        self._wake = threading.Event()
        self._refresher: threading.Thread | None = None
        self._flops: CompactMacsWorker | None = None
        self._ended = False
        self._closing = False
        self._dirty = False
        self._reverting = False
        self._replay = False
        self._setting_layers = False

        models = _available_models()
        if self.base.model.name not in models:
            models = models + (self.base.model.name,)
        self.controls = Controls(self.base, models)
        self.view = View(plan=self._plan_of(self.base))
        self.figure, self._layout = dashboard_figure(self.run, self.view, widget_class=LiveFigure)
        # plotly's widget view draws before it is attached to the page, when its container
        # has no width yet (so it falls back to 700 px), and never resizes itself. Responsive
        # plots follow window resizes; `_fit_width` re-fits once the view is on the page.
        self.figure._config = {**self.figure._config, "responsive": True}
        self.progress = w.IntProgress(value=0, min=0, max=self.base.training.epochs,
                                      description="epoch 0", layout=w.Layout(width="320px"),
                                      style={"description_width": "90px"})
        self.status = w.HTML(value='<span style="color:#555">not started</span>')
        self.speedup = w.HTML()  # the compact model's measured speed-up, once exported
        self._exporter: threading.Thread | None = None
        name = title or (f"run: {self.run_dir}" if self.run_dir else "run in memory")
        self.widget = w.VBox([
            w.HTML(f"<b>ASFP explorer</b> &nbsp; <span style='color:#555'>{name}</span>"),
            self.controls.box(),
            w.HBox([self.progress, self.status], layout=w.Layout(align_items="center")),
            self.controls.layer,
            self.figure,
            self.speedup,
        ])
        self.controls.on_change(self._on_control)
        self.controls.start.on_click(lambda _: self.start())
        self.controls.pause.on_click(lambda _: self._toggle_pause())
        self.controls.stop.on_click(lambda _: self.stop())
        self.controls.export.on_click(lambda _: self.export())
        self.controls.layer.observe(self._on_layer, names="value")
        self._preview()
        if fvcore:
            from .compact_macs import warm_up

            warm_up()

    # ------------------------------------------------------------------ public

    def show(self, start: bool | None = None) -> None:
        """Display the dashboard; start training unless `start=False` (or this is a replay)."""
        from IPython.display import display

        display(self.widget)
        threading.Timer(1.0, self._fit_width).start()
        if start if start is not None else not self._replay:
            self.start()

    def start(self):
        """Start a run with the controls' values in a background thread; returns its handle,
        or None (with a one-line message in the UI) when the values are refused."""
        from ..engine import RunHandle

        with self._lock:
            if self.handle is not None and self.handle.status in ("running", "paused"):
                self.controls.say("a run is in progress; stop it first", "warn")
                return None
            config = self.controls.try_config(self.base)
            if config is None:
                return None
            self.controls.say("preparing data and model ...")
            try:
                handle = RunHandle(config, self.run_dir, [self._observe], overwrite=self.overwrite)
            except Exception as e:  # bad data path, run folder in use, ...: one line, no traceback
                self.controls.say(one_line(e), "error")
                return None
            self._reset()
            self.handle = handle
            self.controls.set_running(True)
            self.controls.say(f"training on {handle.trainer.device}", "info")
            if self.refresh_hz > 0:
                self._refresher = threading.Thread(target=self._loop, name="asfp-dashboard",
                                                   daemon=True)
                self._refresher.start()
            handle.start()
            return handle

    def pause(self) -> None:
        if self.handle is not None:
            self.handle.pause()
            self.controls.set_running(True, paused=True)
            self.controls.say("pausing at the next epoch boundary", "warn")

    def resume(self) -> None:
        if self.handle is not None:
            self.handle.resume()
            self.controls.set_running(True, paused=False)
            self.controls.say("resumed", "info")

    def stop(self) -> None:
        """Stop at the next epoch boundary (the run stays resumable from its run_dir)."""
        if self.handle is not None:
            self.handle.stop()
            self.handle.resume()  # a paused run must wake up to stop
            self.controls.say("stopping at the next epoch boundary", "warn")

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends and the figures show all of it; returns the run's status.

        With `timeout` (seconds), returns the current status when it passes first.
        """
        if self.handle is None:
            return self.run.status
        self.handle.wait(timeout)
        if self.handle.status in ("running", "paused"):
            return self.handle.status
        if self._flops is not None:
            self._flops.drain(timeout=120)
        if self._refresher is not None:
            self._wake.set()
            self._refresher.join(timeout=10)
        self.refresh()
        self._after_refresh()
        return self.handle.status

    def refresh(self) -> bool:
        """Fold queued events into `run` and redraw; True when something was drawn."""
        with self._lock:
            events = []
            while self._events:
                events.append(self._events.popleft())
            for event in events:
                self._apply(event)
            fv = self._flops.results() if self._flops is not None else {}
            if not events and fv == dict(self.view.fvcore_macs) and not self._dirty:
                return False
            self._dirty = False
            t0 = time.perf_counter()
            self.view = dataclasses.replace(self.view, fvcore_macs=fv, plan=self._plan_now())
            with self.figure.batch_update():
                fill(self.figure, self._layout, PANELS, self.run, self.view)
            self._update_status()
            self._check_fvcore(fv)
            self.stats.refresh_s.append(time.perf_counter() - t0)
            return True

    def _fit_width(self) -> None:
        """A relayout with autosize makes plotly measure its (by now attached) container."""
        with self._lock:
            self.figure.layout.autosize = None  # so that setting it again is a change
            self.figure.layout.autosize = True

    def close(self) -> None:
        """Stop the refresher and worker threads and close the widgets (the run goes on)."""
        self._closing = True
        self._wake.set()
        if self._flops is not None:
            self._flops.close()
        self.widget.close()

    @classmethod
    def replay(cls, run: RunData | str | Path, **kwargs) -> "Dashboard":
        """A dashboard that shows a stored (finished, stopped or growing) run; `show()` it."""
        data = run if isinstance(run, RunData) else load_run(run)
        kwargs.setdefault("fvcore", False)  # a stored run is not counted again
        dash = cls(RunConfig.from_dict(data.config), refresh_hz=0,
                   title=f"replay: {data.path or data.name}", **kwargs)
        dash._replay = True
        with dash._lock:
            dash.run = data
            dash.controls.disable_all()
            dash._set_layers(data.layer_names)
            dash.progress.max = max(int(data.config["training"]["epochs"]), 1)
            dash._dirty = True
            if data.path is not None:
                dash.run_dir = Path(data.path)
                summary = read_export_summary(data.path)
                if summary is not None:
                    dash.speedup.value = speedup_html(summary)
                dash.controls.export.disabled = not (Path(data.path) / "checkpoint.pt").exists()
        dash.refresh()
        return dash

    def export(self, benchmark: bool = True, batch_sizes: tuple[int, ...] = (1, 64, 256)
               ) -> threading.Thread | None:
        """Build the compact model of the ended run, check it against the masked model, time
        both (when `benchmark`) and show the table under the figures. Runs in a background
        thread, which it returns (None when there is nothing to export yet).

        The model is the run's own (in memory) or, for a replay, its checkpoint; results go to
        `run_dir/export/` (`compact.pt`, `export.json`) or, for a run in memory, a temporary
        folder.
        """
        if self._exporter is not None and self._exporter.is_alive():
            return self._exporter
        if self.handle is not None and self.handle.status in ("running", "paused"):
            self.controls.say("the compact model is built once the run has ended", "warn")
            return None
        if self.handle is None and not (self.run_dir and (self.run_dir / "checkpoint.pt").exists()):
            self.controls.say("nothing to export: start a run first", "warn")
            return None
        self.controls.export.disabled = True
        self.controls.say("building the compact model" + (" and timing it (about 10 s per "
                          "batch size)" if benchmark else "") + " ...")
        self._exporter = threading.Thread(target=self._export, args=(benchmark, batch_sizes),
                                          name="asfp-export", daemon=True)
        self._exporter.start()
        return self._exporter

    def _export(self, benchmark: bool, batch_sizes: tuple[int, ...]) -> None:
        import tempfile

        from ..export import export_compact
        from ..store import load_model

        try:
            if self.handle is not None:
                trainer = self.handle.trainer
                model, masks = trainer.model, dict(trainer.pruning.masks)
                input_size, device = tuple(trainer.data.input_size), trainer.device
            else:
                model, masks, input_size = load_model(self.run_dir)
                device = "cpu"
            out = (self.run_dir / "export") if self.run_dir else Path(tempfile.mkdtemp(prefix="asfp-export-"))
            out.mkdir(parents=True, exist_ok=True)
            summary = export_compact(model, masks, input_size, out, run_benchmark=benchmark,
                                     device=device, batch_sizes=batch_sizes)
            self.speedup.value = speedup_html(summary)
            self.controls.say(f"compact model saved in {out}", "ok")
        except Exception as e:  # one line in the UI; the run and its files are untouched
            self.controls.say(f"export failed: {one_line(e)}", "error")
        finally:
            self.controls.export.disabled = False

    def __repr__(self) -> str:
        m = self.run.metrics[-1]["epoch"] if self.run.metrics else 0
        return f"<Dashboard {self.run.config.get('pruning', {}).get('method', '')} " \
               f"{self.run.status}, epoch {m}>"

    # ------------------------------------------------------------------ training thread

    def _observe(self, event: Event) -> None:
        """Runs on the training thread: queue and return. A deque append is atomic, and the
        refresher polls on its own clock, so nothing here waits or wakes another thread."""
        t0 = time.perf_counter_ns()
        self._events.append(event)
        self.stats.observer_ns.append(time.perf_counter_ns() - t0)

    # ------------------------------------------------------------------ refresher thread

    def _loop(self) -> None:
        # A timer, not a wake-up per event: at most `refresh_hz` redraws a second, and events
        # that arrive in between are drawn together. `_wake` only cuts a wait short (close()).
        period = 1.0 / self.refresh_hz
        while not self._closing:
            self._wake.wait(timeout=period)
            self._wake.clear()
            try:
                self.refresh()
            except Exception as e:  # keep the thread (and the run) alive; say what broke
                self.controls.say(f"dashboard refresh failed: {one_line(e)}", "error")
            if self._ended and not self._events and (self._flops is None or self._flops.idle()):
                self.refresh()  # the last fvcore result, if it landed after the draw above
                self._after_refresh()
                return

    def _apply(self, event: Event) -> None:
        self.stats.events += 1
        kind = event.kind
        if kind is EventKind.MASKS_UPDATED:
            if self._flops is not None:
                self._flops.submit(event.data.epoch, event.data.masks)
            return
        if kind is EventKind.EVALUATED:
            return
        self.run.apply(event)
        if kind is EventKind.RUN_START:
            self._set_layers(self.run.layer_names)
            self.progress.max = int(self.run.config["training"]["epochs"])
            if self.fvcore:
                self._flops = CompactMacsWorker(self.run.config, self.run.info)
        elif kind is EventKind.PARAMETERS_CHANGED:
            ch = ", ".join(f"{k} = {v}" for s in event.data["changes"].values()
                           for k, v in s.items())
            self.controls.say(f"applied from epoch {event.epoch + 1}: {ch}", "ok")
            self.progress.max = int(self.run.config["training"]["epochs"])
        elif kind is EventKind.RUN_END:
            self._ended = True
            status = event.data["status"]
            self.controls.set_running(False)
            self.controls.say(f"run {status}: {event.data['message']}",
                              STATUS_LEVEL.get(status, "info"))
            self.progress.bar_style = {"ok": "success", "warn": "warning",
                                       "error": "danger"}[STATUS_LEVEL.get(status, "warn")]
            self.controls.export.disabled = status not in ("finished", "stopped")

    def _after_refresh(self) -> None:
        """Once the run has ended, the worker is no longer needed."""
        if self._ended and self._flops is not None and self._flops.idle():
            self._flops.close()

    # ------------------------------------------------------------------ main thread (UI)

    def _on_control(self, name: str, value: Any) -> None:
        if self._reverting or self._replay:
            return
        with self._lock:
            try:
                running = self.handle is not None and self.handle.status in ("running", "paused")
                if running and name in STEERING:
                    section, field = STEERING[name]
                    if name in ("prune_ratio", "d"):
                        value = round(float(value), 4)
                    try:
                        self.handle.update(**{section: {field: value}})
                    except (ConfigError, ValueError) as e:
                        self.controls.say(one_line(e), "error")
                        self._revert(name)
                        return
                    self.controls.say(f"queued {section}.{field} = {value}: applies from "
                                      f"epoch {self.handle.epoch + 1}", "info")
                    self._dirty = True
                    self._redraw()
                elif not running:
                    self._preview()
                # (model and data set are disabled during a run: nothing to do)
            except Exception as e:  # never a traceback in the notebook
                self.controls.say(one_line(e), "error")

    def _on_layer(self, change: dict) -> None:
        if change["new"] is None or self._setting_layers:
            return
        with self._lock:
            self.view = dataclasses.replace(self.view, layer=change["new"])
            with self.figure.batch_update():
                fill(self.figure, self._layout, PANELS, self.run, self.view, which=(3, 4))

    def _toggle_pause(self) -> None:
        if self.handle is None:
            return
        if self.handle.status == "paused":
            self.resume()
        else:
            self.pause()

    def _revert(self, name: str) -> None:
        section, field = STEERING[name]
        current = getattr(getattr(self.handle.config, section), field)
        self._reverting = True
        try:
            self.controls.set_value(name, current)
        finally:
            self._reverting = False

    def _preview(self) -> None:
        """Before (or between) runs: schedule and predicted FLOPs for the controls' values."""
        config = self.controls.try_config(self.base)
        if config is None:
            return
        try:
            plan = self._plan_of(config)
            plan.values()
        except ValueError as e:
            self.controls.say(one_line(e), "error")
            return
        self.controls.say("")
        self.controls.prediction.value = self._prediction(config)
        if not self.run.metrics or self._ended:
            self.view = dataclasses.replace(self.view, plan=plan)
        self._dirty = True
        self._redraw()

    def _redraw(self) -> None:
        with self._lock:
            self.view = dataclasses.replace(self.view, plan=self._plan_now())
            with self.figure.batch_update():
                fill(self.figure, self._layout, PANELS, self.run, self.view)
            self._dirty = False

    # ------------------------------------------------------------------ helpers

    def _reset(self) -> None:
        if self._flops is not None:
            self._flops.close()
        self._flops = None
        self._events.clear()
        self._ended = False
        self.run = RunData(path=self.run_dir)
        self.view = View(plan=self._plan_now_from_controls())
        self.progress.value, self.progress.bar_style = 0, ""
        self.status.value = "starting ..."

    @staticmethod
    def _plan_of(config: RunConfig) -> Plan:
        p = config.pruning
        return Plan(p.method, p.prune_ratio, p.d, config.training.epochs)

    def _plan_now_from_controls(self) -> Plan:
        config = self.controls.try_config(self.base)
        return self._plan_of(config) if config is not None else self.view.plan

    def _plan_now(self) -> Plan:
        """What the schedule panel previews: the live run's config (queued changes included)
        while it runs; the controls before a run and after it, once a slider moves."""
        if self.handle is not None and not self._ended:
            return self._plan_of(self.handle.config)
        if self._replay and self.run.config:
            return Plan.of_run(self.run)
        return self.view.plan or self._plan_of(self.base)

    def _set_layers(self, names: list[str]) -> None:
        """New layer choices (at RUN_START): the refresh that follows draws them, so the
        menu's own change handler stays quiet (one message per refresh)."""
        keep = self.controls.layer.value
        self._setting_layers = True
        try:
            self.controls.layer.options = list(names)
            if names:
                self.controls.layer.value = keep if keep in names else names[0]
                self.view = dataclasses.replace(self.view, layer=self.controls.layer.value)
        finally:
            self._setting_layers = False

    def _update_status(self) -> None:
        run = self.run
        if not run.metrics:
            return
        m = run.metrics[-1]
        total = int(run.config.get("training", {}).get("epochs", m["total_epochs"]))
        self.progress.max = max(total, 1)
        self.progress.value = min(m["epoch"], total)
        self.progress.description = f"epoch {m['epoch']}/{total}"
        secs = [x["epoch_seconds"] for x in run.metrics[1:]][-5:]
        per = float(np.median(secs)) if secs else None
        parts = []
        if per is not None:
            parts.append(f"{per:.2f} s/epoch")
            if not self._ended:
                parts.append(f"ETA {_duration(per * max(total - m['epoch'], 0))}")
        parts.append(str(run.info.get("device", "")))
        parts.append(f"masked acc {100 * m['test_acc_masked']:.1f} %")
        parts.append(f"P {100 * m['prune_ratio']:.1f} %")
        dense = run.info.get("dense_macs")
        if dense:
            cut = 100 * (1 - m["exact_macs"] / dense)
            parts.append(f"<span title=\"{MAC_TIP}\">MACs −{cut:.1f} %</span>")
        if self._ended:
            parts.insert(0, f"<b>{run.status}</b>")
        self.status.value = " · ".join(p for p in parts if p)

    def _check_fvcore(self, fv: dict[int, int]) -> None:
        exact = {m["epoch"]: m["exact_macs"] for m in self.run.metrics}
        bad = [(e, v, exact[e]) for e, v in fv.items() if e in exact and v != exact[e]]
        if bad:
            e, v, x = bad[0]
            self.controls.say(f"fvcore counts {v:,} MACs for the compact model at epoch {e}, "
                              f"the analytic count says {x:,}", "warn")
        if self._flops is not None and self._flops.errors:
            self.controls.say(self._flops.errors[0], "warn")

    def _prediction(self, config: RunConfig) -> str:
        """Predicted MAC reduction at the target ratio, paper convention and exact."""
        counter = self._counter(config)
        if counter is None:
            return ""
        p = config.pruning.prune_ratio
        dense = counter.dense_macs
        paper = float(counter.paper_macs(p))
        exact = counter.exact_macs(counter.kept_at(p))
        return (f"<span title=\"{MAC_TIP}\">at P = {100 * p:.0f} %: conv MACs "
                f"−{100 * (1 - paper / dense):.1f} % (paper convention), "
                f"−{100 * (1 - exact / dense):.1f} % (exact) of {dense / 1e6:.1f} M dense</span>")

    def _counter(self, config: RunConfig):
        """The MacCounter of the chosen model and data set (built once per process)."""
        from .compact_macs import mac_counter

        try:
            channels, size, classes = _input_shape(config)
            return mac_counter(config.model.name, (channels, size[0], size[1]), classes)
        except Exception as e:
            self.controls.say(f"no FLOPs prediction: {one_line(e)}", "warn")
            return None


def _input_shape(config: RunConfig) -> tuple[int, tuple[int, int], int]:
    """(channels, (height, width), classes) of the configured data set, without loading it
    where the shape is known."""
    if config.data.name == "digits":
        return 1, (8, 8), 10
    if config.data.name == "cifar10":
        return 3, (32, 32), 10
    from ..data import load_npz

    d = load_npz(config.data.path)
    c, h, w_ = d.input_size
    return c, (h, w_), d.num_classes


def _duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"

"""The live dashboard: controls, a status line and one figure, training in the background.

    dash = Dashboard(config, run_dir="runs/asfp")
    dash.show()               # lays out the widgets and starts training in a child process
    dash.then(other)          # `other` starts when this run ends; the cell returns at once

This module is the view: widgets, the refresher that folds events into a `RunData` and
redraws, the status line. The other roles live beside it: `steering.py` (what a click or a
slider does to the run), `replay.py` (a stored run), `dashboard_export.py` (the compact model
and figure files), `live_figure.py` (the FigureWidget), `..prediction` (predicted MACs).

Costs, by design:
- training runs in a child process (`engine.ProcessRunHandle`; `worker="thread"` keeps it
  in a thread of the kernel); the observer, on the thread that receives its events (or on
  the training thread), appends the event to a deque: a few microseconds, and it never
  waits on the browser;
- a refresher thread folds queued events into a `RunData` and redraws at most `refresh_hz`
  times a second, and less often when redraws are slow: they take at most `busy_share` (3 %)
  of the wall time; every refresh assigns a fixed set of traces inside one `batch_update()`,
  which `LiveFigure` sends as one comm message;
- one FigureWidget for all six panels (each FigureWidget ships plotly's ~5 MB bundle);
- fvcore's count of the compact model runs off the training thread (`compact_macs`).

Notebook flow: a cell that blocks (`wait()`) holds up every widget message until it returns,
so Pause and Stop would act late, on whatever state the run has then. Queue runs with
`then()` instead; `wait()` says in one line that the controls are inactive meanwhile.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w
import numpy as np

from ..config import RunConfig
from ..engine.events import Event, EventKind
from ..engine.process_runner import can_run_in_process
from ..engine.queue import RunQueue
from ..store import RunData
from .compact_macs import CompactMacsWorker
from .controls import Controls, one_line
from .dashboard_export import CompactExport, default_figure_path
from .diagnostics_pane import DiagnosticsPane
from .figures import PANELS, Plan, View, dashboard_figure, fill
from .live_figure import LiveFigure
from .pacing import DEFAULT_BUSY_SHARE, check_busy_share, next_wait
from .steering import LIVE, Steering

STATUS_LEVEL = {"finished": "ok", "stopped": "warn", "diverged": "error", "failed": "error"}
MAC_TIP = "MACs = multiply-accumulates of conv layers (fvcore&#39;s convention)"
WORKERS = ("process", "thread")
WAIT_NOTE = ("wait(): the dashboard's buttons and sliders are inactive until this cell "
             "returns; queue runs with .then() to keep them live")


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
    """The model menu: the built-in ResNets, then the names added by `register_model`."""
    from ..models import model_names

    return tuple(model_names())


def _in_kernel_main_thread() -> bool:
    """True in a Jupyter kernel's cell, where a blocking call holds up widget messages."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Dashboard:
    """Controls, a progress line and live figures for one run at a time.

    `config`: the starting configuration (the controls edit a copy). `run_dir`: where the run
    is recorded (None: in memory only); `overwrite=True` lets Start replace an earlier run
    there. `refresh_hz`: the most redraws per second (0: only when `refresh()` is called).
    `busy_share`: the most of the wall time redraws may take (they compete with training for
    the GIL and the cores; default 0.03 = 3 %).
    `model` / `dataset`: your own `nn.Module` (each Start trains a fresh copy of it) and
    `data.Dataset` instead of the configured ones.
    `worker`: where training runs. "process" (a child process, `ProcessRunHandle`): the
    kernel stays free and small models train at full speed (a background thread in a kernel
    trains digits up to 2x slower, see `engine.process_runner`); "thread" (`RunHandle.start`).
    Default: "process", except for your own model or data set or a name added with
    `register_model`, which only this process knows ("thread"). Both compute the same run.
    """

    def __init__(self, config: RunConfig | None = None, run_dir: str | Path | None = None, *,
                 overwrite: bool = False, refresh_hz: float = 4.0,
                 busy_share: float = DEFAULT_BUSY_SHARE,
                 fvcore: bool = True,
                 title: str | None = None, model: Any = None, dataset: Any = None,
                 worker: str | None = None):
        self.base = config or RunConfig()
        self.worker = _check_worker(worker, self.base, model, dataset)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.overwrite = overwrite
        self.refresh_hz = refresh_hz
        self.busy_share = check_busy_share(busy_share)
        self.own_model, self.own_dataset = model, dataset
        # fvcore counts rebuild the model from its name in another process: not for your own.
        self.fvcore = fvcore and model is None
        self.handle = None
        self.run = RunData()
        self.stats = DashboardStats()
        self.is_replay = False
        self.lock = threading.RLock()  # guards the figure, `run` and `view` across threads
        self.steering = Steering(self)
        self.exporter = CompactExport(self)
        self.run_ended = threading.Event()  # set once a run of this dashboard has ended
        self.queue: RunQueue | None = None  # shared by dashboards chained with then()
        self._events: collections.deque[Event] = collections.deque()
        self._wake = threading.Event()
        self._refresher: threading.Thread | None = None
        self._flops: CompactMacsWorker | None = None
        self._ended = False
        self._closing = False
        self._dirty = False
        self._setting_layers = False
        self._held_shown = False
        self._counter = None

        models = _available_models()
        if self.base.model.name not in models:
            models = models + (self.base.model.name,)
        self.controls = Controls(self.base, models)
        if model is not None or dataset is not None:  # fixed by the caller, not by a menu
            for name in ("model",) if dataset is None else ("model", "dataset"):
                self.controls.widgets[name].disabled = True
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
        # Dead filters, BN kick, accuracy gap: a second figure, built when first opened.
        self.diagnostics = DiagnosticsPane(lambda: self.run, self.lock, LiveFigure)
        self.name = title or (f"run: {self.run_dir}" if self.run_dir else "run in memory")
        self.widget = w.VBox([
            w.HTML(f"<b>ASFP explorer</b> &nbsp; <span style='color:#555'>{self.name}</span>"),
            self.controls.box(),
            w.HBox([self.progress, self.status], layout=w.Layout(align_items="center")),
            self.controls.layer,
            self.figure,
            self.diagnostics.widget,
            self.speedup,
        ])
        self.controls.on_change(self.steering.on_control)
        self.controls.start.on_click(lambda _: self.start())
        self.controls.pause.on_click(lambda _: self.steering.toggle_pause())
        self.controls.stop.on_click(lambda _: self.steering.stop())
        self.controls.export.on_click(lambda _: self.export())
        self.controls.save.on_click(lambda _: self._save_clicked())
        self.controls.layer.observe(self._on_layer, names="value")
        self.preview()
        if self.fvcore:
            from .compact_macs import warm_up

            warm_up()

    # ------------------------------------------------------------------ public

    def show(self, start: bool | None = None) -> None:
        """Display the dashboard; start training unless `start=False` (or this is a replay)."""
        from IPython.display import display

        with self.lock:
            self.figure.sync_state()  # a view created now draws the figure as it is
        display(self.widget)
        threading.Timer(1.0, self._fit_width).start()
        if start if start is not None else not self.is_replay:
            self.start()

    def start(self):
        """Start a run with the controls' values in a child process (or a background thread,
        see `worker`); returns its handle, or None (with a one-line message in the UI) when
        the values are refused."""
        with self.lock:
            if self.steering.live():
                self.controls.say("a run is in progress; stop it first", "warn")
                return None
            config = self.controls.try_config(self.base)
            if config is None:
                return None
            self.controls.say("preparing data and model ...")
            try:
                handle = self._new_handle(config)
            except Exception as e:  # bad data path, run folder in use, ...: one line, no traceback
                self.controls.say(one_line(e), "error")
                return None
            self._reset()
            self.handle = handle
            self.run_ended.clear()
            self.controls.set_running(True)
            self.controls.say(f"training on {handle.device}", "info")
            if self.refresh_hz > 0:
                self._refresher = threading.Thread(target=self._loop, name="asfp-dashboard",
                                                   daemon=True)
                self._refresher.start()
            handle.start()
            return handle

    def _new_handle(self, config: RunConfig):
        """A run handle for `config` that reports to this dashboard, in the chosen worker."""
        from ..engine import ProcessRunHandle, RunHandle

        worker = self.worker
        if worker == "process" and not can_run_in_process(config):
            worker = "thread"  # the model menu now names a model registered in this process
        if worker == "process":
            return ProcessRunHandle(config, self.run_dir, [self._observe],
                                    overwrite=self.overwrite)
        model = copy.deepcopy(self.own_model) if self.own_model is not None else None
        return RunHandle(config, self.run_dir, [self._observe], overwrite=self.overwrite,
                         model=model, dataset=self.own_dataset)

    def pause(self) -> None:
        """Pause at the end of the epoch in progress (the status line confirms it)."""
        self.steering.pause()

    def resume(self) -> None:
        self.steering.resume()

    def stop(self) -> None:
        """Stop at the next epoch boundary (the run stays resumable from its run_dir)."""
        self.steering.stop()

    def then(self, next_: "Dashboard | Callable[[], Any]") -> "Dashboard | Callable[[], Any]":
        """Start `next_` (a Dashboard, or any callable) once this dashboard's run has ended,
        and return it, so `a.then(b).then(c)` runs a, b, c one after another. Returns at once:
        the notebook stays free and every dashboard's controls stay live.

        If this dashboard has not started yet, `next_` waits for its run (Start, or
        `start()`) to end. Chained dashboards share one `RunQueue` (`dash.queue`).
        """
        queue = self.queue or (next_.queue if isinstance(next_, Dashboard) else None) \
            or RunQueue()
        self.queue = queue
        if id(self) not in queue.members:
            queue.members.add(id(self))
            queue.add(self._until_ended, label=self.name)
        if isinstance(next_, Dashboard):
            next_.queue = queue
            queue.members.add(id(next_))
            next_.controls.say(f"queued: starts when {self.name} has ended", "info")
            queue.add(next_._start_and_wait, label=next_.name)
        else:
            queue.add(next_, label=getattr(next_, "__name__", "job"))
        return next_

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends and the figures show all of it; returns the run's status.

        With `timeout` (seconds), returns the current status when it passes first. A
        dashboard queued with `then()` that has not started yet is waited for too ("queued"
        when `timeout` passes first). In a notebook cell this holds up widget messages: one
        line says so.
        """
        queued = self.handle is None and self.queue is not None and id(self) in self.queue.members
        if self.handle is None and not queued:
            return self.run.status
        if (queued or self.steering.live()) and _in_kernel_main_thread():
            print(WAIT_NOTE)
        if queued:
            if not self.run_ended.wait(timeout):
                return "queued"
            if self.handle is None:  # its start was refused; the message line says why
                return "refused"
        self.handle.wait(timeout)
        if self.handle.status in LIVE:
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
        with self.lock:
            events = []
            while self._events:
                events.append(self._events.popleft())
            for event in events:
                self._apply(event)
            held = self.handle is not None and self.handle.held.is_set() and not self._ended
            if held != self._held_shown:
                self._held_shown = held
                self._on_held(held)
            fv = self._flops.results() if self._flops is not None else {}
            if not events and fv == dict(self.view.fvcore_macs) and not self._dirty:
                return False
            t0 = time.perf_counter()
            self.view = dataclasses.replace(self.view, fvcore_macs=fv)
            self.redraw()
            self.diagnostics.update()  # only when epochs were added
            self.update_status()
            self._check_fvcore(fv)
            self.stats.refresh_s.append(time.perf_counter() - t0)
            return True

    def poke(self) -> None:
        """Ask the refresher for a refresh now (a button changed the run's state)."""
        self._wake.set()

    def trained_model(self):
        """The ended run's model for export (`engine.runner.TrainedModel`): the live run's own
        model, or, for a replay or a dashboard without a handle, the run_dir's checkpoint."""
        if self.handle is not None:
            return self.handle.trained_model()
        from ..engine.runner import TrainedModel
        from ..store import load_model

        if self.run_dir is None:
            raise RuntimeError("trained_model: no run yet; start one first")
        model, masks, input_size = load_model(self.run_dir)
        return TrainedModel(model, masks, input_size, "cpu")

    def can_export(self) -> bool:
        """An ended run in memory, or a checkpoint in run_dir."""
        if self.handle is not None:
            return self.handle.status in ("finished", "stopped")
        return bool(self.run_dir and (self.run_dir / "checkpoint.pt").exists())

    def export(self, benchmark: bool = True, batch_sizes: tuple[int, ...] = (1, 64, 256)
               ) -> threading.Thread | None:
        """Build the compact model of the ended run, check it against the masked model, time
        both (when `benchmark`) and show the table under the figures. Runs in a background
        thread, which it returns (None when there is nothing to export yet).

        Results go to `run_dir/export/` (`compact.pt`, `export.json`) or, for a run in memory,
        a temporary folder.
        """
        return self.exporter.start(benchmark, batch_sizes)

    def save_figure(self, path: str | Path | None = None, fmt: str = "png") -> Path:
        """Write the dashboard's figure as PNG, SVG or PDF (needs kaleido); returns the path.

        Without `path`: `run_dir/figures/dashboard-epoch-N.<fmt>`. Raises
        `image_export.FigureExportError` (one line) where kaleido or Chrome is missing.
        """
        from .image_export import FORMATS, FigureExportError, save_figure

        if path is None and fmt not in FORMATS:
            raise FigureExportError(f"fmt: {fmt!r} is not allowed; allowed: png, svg, pdf")
        target = Path(path) if path is not None else default_figure_path(self, fmt)
        with self.lock:
            snapshot = self.figure.to_dict()  # the figure may change while kaleido renders
        import plotly.graph_objects as go

        return save_figure(go.Figure(snapshot), target, width=1400)

    def _save_clicked(self) -> None:
        fmt = self.controls.figure_format.value
        self.controls.save.disabled = True
        self.controls.say(f"writing the figure as {fmt.upper()} ...")

        def work() -> None:
            try:
                path = self.save_figure(fmt=fmt)
                self.controls.say(f"figure saved: {path}", "ok")
            except Exception as e:
                self.controls.say(one_line(e), "error")
            finally:
                self.controls.save.disabled = False

        threading.Thread(target=work, name="asfp-save-figure", daemon=True).start()

    def close(self) -> None:
        """Stop the refresher and worker threads and close the widgets (the run goes on)."""
        self._closing = True
        self._wake.set()
        if self._flops is not None:
            self._flops.close()
        self.widget.close()

    @classmethod
    def replay(cls, run, **kwargs) -> "Dashboard":
        """A dashboard that shows a stored (finished, stopped or growing) run; `show()` it.
        `run`: a run directory or a `RunData`."""
        from .replay import replay_dashboard

        return replay_dashboard(cls, run, **kwargs)

    @classmethod
    def follow(cls, run_dir, **kwargs) -> "Dashboard":
        """A dashboard that follows a run directory another process is writing (polls it and
        redraws; survives kills, resumes, restarts); `show()` it, `close()` stops following.
        `poll_seconds` (default 1), `start_timeout` (s to wait for the run to start)."""
        from .follow import follow_dashboard

        return follow_dashboard(cls, run_dir, **kwargs)

    def __repr__(self) -> str:
        m = self.run.metrics[-1]["epoch"] if self.run.metrics else 0
        return f"<Dashboard {self.run.config.get('pruning', {}).get('method', '')} " \
               f"{self.run.status}, epoch {m}>"

    # ------------------------------------------------------------------ the run queue

    def _until_ended(self) -> str:
        self.run_ended.wait()
        return self.handle.wait() if self.handle is not None else self.run.status

    def _start_and_wait(self) -> str:
        handle = self.start()
        if handle is None:  # refused: the message line says why; the queue goes on
            self.run_ended.set()
            return "refused"
        return handle.wait()

    # ------------------------------------------------------------------ training thread

    def _observe(self, event: Event) -> None:
        """Runs on the training thread: queue and return. A deque append is atomic, and the
        refresher polls on its own clock, so nothing here waits on another thread."""
        t0 = time.perf_counter_ns()
        self._events.append(event)
        if event.kind is EventKind.RUN_END:
            self.run_ended.set()  # a run queued after this one may start
            self._wake.set()  # draw the end now, not after the refresher's wait
        self.stats.observer_ns.append(time.perf_counter_ns() - t0)

    # ------------------------------------------------------------------ refresher thread

    def _loop(self) -> None:
        # A timer, not a wake-up per event: at most `refresh_hz` redraws a second, and events
        # that arrive in between are drawn together. `_wake` cuts a wait short (a button,
        # close()).
        # The wait after a redraw grows with its cost (`pacing`): short epochs are drawn
        # several at a time rather than slowed by more than `busy_share`.
        period = 1.0 / self.refresh_hz
        wait = period
        while not self._closing:
            self._wake.wait(timeout=wait)
            self._wake.clear()
            t0 = time.perf_counter()
            try:
                self.refresh()
            except Exception as e:  # keep the thread (and the run) alive; say what broke
                self.controls.say(f"dashboard refresh failed: {one_line(e)}", "error")
            wait = next_wait(time.perf_counter() - t0, period, self.busy_share)
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
            self.set_layers(self.run.layer_names)
            self.progress.max = int(self.run.config["training"]["epochs"])
            if self.fvcore:
                self._flops = CompactMacsWorker(self.run.config, self.run.info)
        elif kind is EventKind.PARAMETERS_CHANGED:
            ch = ", ".join(f"{k} = {v}" for s in event.data["changes"].values()
                           for k, v in s.items())
            # event.epoch epochs are done: the first epoch trained with the change is the next.
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

    def _on_held(self, held: bool) -> None:
        """The training thread has stopped at a boundary (paused), or left it."""
        if held:
            done = self.handle.epoch
            self.controls.set_running(True, paused=True)
            self.controls.say(f"paused after epoch {done}: Resume continues with epoch "
                              f"{done + 1}, Stop ends the run (resumable)", "warn")
        self._dirty = True  # the status line shows or drops "paused"

    def _after_refresh(self) -> None:
        """Once the run has ended, the worker is no longer needed."""
        if self._ended and self._flops is not None and self._flops.idle():
            self._flops.close()

    # ------------------------------------------------------------------ main thread (UI)

    def _on_layer(self, change: dict) -> None:
        if change["new"] is None or self._setting_layers:
            return
        with self.lock:
            self.view = dataclasses.replace(self.view, layer=change["new"])
            with self.figure.batch_update():
                fill(self.figure, self._layout, PANELS, self.run, self.view, which=(3, 4))

    def _fit_width(self) -> None:
        """A relayout with autosize makes plotly measure its (by now attached) container."""
        with self.lock:
            self.figure.layout.autosize = None  # so that setting it again is a change
            self.figure.layout.autosize = True

    def preview(self) -> None:
        """Before (or between) runs: schedule and predicted MACs for the controls' values."""
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
        self.redraw()

    def redraw(self) -> None:
        """Draw every panel from `run` and `view` (one message)."""
        with self.lock:
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
        self._held_shown = False
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
        if self.is_replay and self.run.config:
            return Plan.of_run(self.run)
        return self.view.plan or self._plan_of(self.base)

    def set_layers(self, names: list[str]) -> None:
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

    def update_status(self) -> None:
        """The line beside the progress bar: speed, ETA (not while paused), accuracy, P, MACs."""
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
        if self._held_shown:
            parts.append("<b>paused</b>")
        if per is not None:
            parts.append(f"{per:.2f} s/epoch")
            if not self._ended and not self._held_shown:
                parts.append(f"ETA {_duration(per * max(total - m['epoch'], 0))}")
        parts.append(str(run.info.get("device", "")))
        parts.append(f"masked acc {100 * m['test_acc_masked']:.1f} %")
        parts.append(f"P {100 * m['prune_ratio']:.1f} %")
        dense = run.info.get("dense_macs")
        if dense:
            cut = 100 * (1 - m["exact_macs"] / dense)
            parts.append(f"<span title=\"{MAC_TIP}\">MACs −{cut:.1f} %</span>")
        if self._ended or self.is_replay:
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
        from ..prediction import predict_macs

        try:
            pred = predict_macs(config, counter=self._counter_factory())
        except Exception as e:
            self.controls.say(f"no FLOPs prediction: {one_line(e)}", "warn")
            return ""
        return (f"<span title=\"{MAC_TIP}\">at P = {100 * pred.prune_ratio:.0f} %: conv MACs "
                f"−{100 * pred.paper_cut:.1f} % (paper convention), "
                f"−{100 * pred.exact_cut:.1f} % (exact) of {pred.dense / 1e6:.1f} M dense</span>")

    def _counter_factory(self):
        """Builds the MacCounter: the kernel-wide cache for registry models; for your own
        model, one counter of it (and of your data's input size), built once."""
        if self.own_model is None:
            from .compact_macs import mac_counter

            return mac_counter
        if self._counter is None:
            from ..flops import MacCounter

            size = tuple(self.own_dataset.input_size) if self.own_dataset is not None else None
            if size is None:
                from ..prediction import input_shape

                c, (h, w_), _ = input_shape(self.base)
                size = (c, h, w_)
            self._counter = MacCounter(copy.deepcopy(self.own_model), size)
        counter = self._counter
        return lambda *_: counter


def _check_worker(worker: str | None, config: RunConfig, model: Any, dataset: Any) -> str:
    """The worker a dashboard trains in (see `Dashboard`); one line for a wrong value."""
    if worker is None:
        return "process" if can_run_in_process(config, model, dataset) else "thread"
    if worker not in WORKERS:
        raise ValueError(f"worker: {worker!r} is not allowed; allowed: process, thread")
    if worker == "process" and (model is not None or dataset is not None):
        raise ValueError("worker: 'process' cannot train your own model or data set object "
                         "(the child process rebuilds the run from the config); use 'thread'")
    return worker


def _duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"

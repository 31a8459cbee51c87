"""The dashboard's "Diagnostics" accordion: dead filters, the BN kick and the accuracy gap.

Its FigureWidget is built the first time the accordion is opened (every FigureWidget ships
plotly's bundle to the browser, so a closed pane costs nothing) and is then redrawn on the
dashboard's own refresh, only when epochs were added: the records change once per epoch.
"""

from __future__ import annotations

import threading
from typing import Callable

import ipywidgets as w

from ..store import RunData
from .diagnostics import diagnostics_figure, update_diagnostics

TITLE = "Diagnostics: dead filters, BN kick, accuracy lost to the mask"


class DiagnosticsPane:
    """`widget` goes into the dashboard's layout; call `update()` from its refresh.

    `current_run`: returns the RunData being shown; `lock`: the dashboard's lock (figure and
    run are read under it); `widget_class`: the FigureWidget subclass the dashboard draws with.
    """

    def __init__(self, current_run: Callable[[], RunData], lock: threading.RLock,
                 widget_class: type, open_now: bool = False):
        self._current_run = current_run
        self._lock = lock
        self._widget_class = widget_class
        self.figure = None
        self._layout = None
        self._drawn: tuple[int, int] = (0, -1)  # (id of the run, its epoch records) on show
        self._body = w.VBox()
        self.widget = w.Accordion(children=[self._body], titles=(TITLE,), selected_index=None)
        self.widget.observe(self._on_open, names="selected_index")
        if open_now:
            self.widget.selected_index = 0

    def _on_open(self, change: dict) -> None:
        if change["new"] is None or self.figure is not None:
            return
        with self._lock:
            run = self._current_run()
            self.figure, self._layout = diagnostics_figure(run, widget_class=self._widget_class)
            self.figure._config = {**self.figure._config, "responsive": True}
            self._drawn = (id(run), len(run.metrics))
            sync = getattr(self.figure, "sync_state", None)
            if sync is not None:  # the reload-safe LiveFigure: its state is the filled figure
                sync()
            self._body.children = [self.figure]

    def update(self, force: bool = False) -> bool:
        """Redraw if the pane is open and shows another run or fewer epochs than there are
        (or `force`); call with the dashboard's lock held. True when something was drawn."""
        if self.figure is None:
            return False
        run = self._current_run()
        now = (id(run), len(run.metrics))
        if not force and now == self._drawn:
            return False
        with self.figure.batch_update():
            update_diagnostics(self.figure, self._layout, run)
        self._drawn = now
        return True

    def close(self) -> None:
        self.widget.close()

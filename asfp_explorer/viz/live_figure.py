"""A plotly FigureWidget that sends each batch update as one message and survives a reload.

One message: plotly sends each `Plotly.update` as four widget state changes (two edit ids,
the update, then None to clear it). Here the ids and the update are set inside
`hold_sync()`, which ipywidgets sends as one message. The update is not cleared: every later
one has new edit ids, so it always differs and is always sent.

A reload (or a view opened later): the browser builds its views from the widget *state*
that the kernel holds. Plotly keeps the traces in that state (`_widget_data`,
`_widget_layout`) as they were when the widget was created or last displayed on its own, and
lets each browser-side model fold later updates into its own copy. A dashboard's figure is
displayed inside a VBox (plotly's own display hook never runs) and is updated hundreds of
times, so after a reload the kernel's state held the empty traces of construction, plus a
stale `_py2js_update` that no view applies at creation: blank plots. The same hole dropped
the dense-MACs line of a replay, whose updates were sent before any view existed. The fix:
`get_state()` answers a full-state request (a reload, `request_states`) with the current
traces and layout and no pending update, and `sync_state()` pushes them once before the
figure is displayed.

Loading: the figure's `_esm` is a small loader that shares one copy of plotly's widget code
per page (`plotly_code.py`); a reloaded page then gets a few MB instead of 5 MB per figure.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import plotly.graph_objects as go
import traitlets

from .plotly_code import LOADER_ESM, shared_plotly_code

_PENDING = ("_py2js_update", "_py2js_restyle", "_py2js_relayout", "_py2js_addTraces",
            "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_animate",
            "_py2js_removeLayoutProps", "_py2js_removeTraceProps")


class LiveFigure(go.FigureWidget):
    """FigureWidget with one comm message per `batch_update()`, reload-safe state, and
    plotly's code shared with the other LiveFigures on the page."""

    _esm = LOADER_ESM
    _plotly_code = traitlets.Unicode().tag(sync=True)  # the PlotlyCode widget's model id

    @traitlets.default("_plotly_code")
    def _shared_code_id(self) -> str:
        return shared_plotly_code().model_id

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

    def current_state(self) -> dict[str, Any]:
        """`_widget_data` / `_widget_layout` as the figure is now, serialised for the wire."""
        out = {}
        for key, value in (("_widget_data", deepcopy(self._data)),
                           ("_widget_layout", deepcopy(self._layout_obj._props))):
            to_json = self.trait_metadata(key, "to_json", self._trait_to_json)
            out[key] = to_json(value, self)
        return out

    def get_state(self, key=None, drop_defaults=False):
        state = super().get_state(key=key, drop_defaults=drop_defaults)
        built = "_data" in self.__dict__  # False while plotly's constructor opens the comm
        if built and ("_widget_data" in state or "_widget_layout" in state):
            # A front end building the model from scratch: give it the figure as it is now.
            fresh = self.current_state()
            for k in ("_widget_data", "_widget_layout"):
                if k in state:
                    state[k] = fresh[k]
            for k in _PENDING:
                if k in state:
                    state[k] = None  # already part of the data above
        return state

    def sync_state(self) -> None:
        """Send the current traces and layout as the widget's state (one message), so that a
        view created from now on draws the figure as it is. Call before displaying."""
        with self.hold_sync():
            self._widget_layout = deepcopy(self._layout_obj._props)
            self._widget_data = deepcopy(self._data)
            self._py2js_update = None

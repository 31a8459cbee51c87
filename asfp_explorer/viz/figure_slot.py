"""A place in the notebook for a figure that a queued task draws later.

    slot = FigureSlot("comparison")   # shows an empty box under the cell, now
    dash.then(lambda: slot.draw(compare([...])))   # filled when the queue gets there

The figure is a static plotly output (plotly's own mimetype, drawn by JupyterLab's plotly
renderer) inside an `ipywidgets.Output`, not a `FigureWidget`. Why: every FigureWidget carries
plotly's ~5 MB JavaScript bundle in its widget state, and a reloaded page gets every widget's
state in one message (jupyterlab-widgets gives up on all of them when the answer takes more
than 4 s). With eight FigureWidgets (41 MB) the tutorial's reloads drew no widget at all in
4 of 4 tries on a 2-core test machine; with its three comparisons as slots (26 MB) they came
back. A figure that never changes needs none of that: the Output's state is the figure's JSON.
"""

from __future__ import annotations

import html
import json

import ipywidgets as w
import plotly.graph_objects as go
import plotly.io as pio

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


class FigureSlot:
    """A one-line status and a figure, shown where it is created and filled later (from any
    thread). `title`: the status line's first text."""

    def __init__(self, title: str = "", *, display_now: bool = True):
        self.line = w.HTML(html.escape(title))
        self.output = w.Output()
        self.widget = w.VBox([self.line, self.output])
        if display_now:
            from IPython.display import display

            display(self.widget)

    def say(self, text: str) -> None:
        """Set the status line (plain text)."""
        self.line.value = html.escape(text)

    def draw(self, fig: go.Figure) -> None:
        """Show `fig` in the slot, replacing what was there."""
        bundle = {PLOTLY_MIMETYPE: json.loads(pio.to_json(fig, validate=False)),
                  "text/plain": f"<plotly figure: {len(fig.data)} traces>"}
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def figure(self) -> go.Figure | None:
        """The figure shown now (None while empty)."""
        if not self.output.outputs:
            return None
        return go.Figure(self.output.outputs[0]["data"][PLOTLY_MIMETYPE])

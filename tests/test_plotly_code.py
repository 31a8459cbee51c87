"""plotly's widget code travels once per kernel, not once per LiveFigure (plotly_code.py).

The reference is plotly's own FigureWidget, measured the same way: what a reloaded page
receives for each widget (its JSON state plus its binary buffers). The page side (one import
for all figures, outputs that come back when the page is busy after a reload) is tested in
tests/test_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly.basewidget
import plotly.graph_objects as go
from ipywidgets.widgets.widget import _remove_buffers

from asfp_explorer.viz import plotly_code
from asfp_explorer.viz.live_figure import LiveFigure
from asfp_explorer.viz.plotly_code import LOADER_ESM, PlotlyCode, shared_plotly_code

PLOTLY_BUNDLE = Path(plotly.basewidget.__file__).parent / "package_data" / "widgetbundle.js"


def _wire_bytes(widget) -> tuple[int, int]:
    """(JSON bytes, binary buffer bytes) of the state a reloaded page gets for `widget`."""
    state, _, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state, default=str)), sum(len(memoryview(b).cast("B")) for b in buffers)


def _figure(cls):
    return cls(data=[go.Scatter(y=list(range(100)))], layout={"title": {"text": "t"}})


def test_every_live_figure_loads_the_one_shared_copy_of_plotlys_code():
    a, b = _figure(LiveFigure), _figure(LiveFigure)
    carrier = shared_plotly_code()
    assert a._plotly_code == b._plotly_code == carrier.model_id
    assert a.get_state()["_esm"] == LOADER_ESM
    assert carrier.code == PLOTLY_BUNDLE.read_bytes()


def test_the_code_travels_as_a_binary_buffer_not_inside_the_json():
    json_bytes, buffer_bytes = _wire_bytes(shared_plotly_code())
    assert buffer_bytes == PLOTLY_BUNDLE.stat().st_size
    assert json_bytes < 2_000


def test_a_reload_gets_plotlys_code_once_instead_of_once_per_figure():
    n = 5
    ours = sum(sum(_wire_bytes(_figure(LiveFigure))) for _ in range(n))
    ours += sum(_wire_bytes(shared_plotly_code()))
    plotlys = sum(sum(_wire_bytes(_figure(go.FigureWidget))) for _ in range(n))
    bundle = PLOTLY_BUNDLE.stat().st_size
    assert plotlys > n * bundle  # the reference: the bundle inside every figure's state
    assert ours < bundle + n * 20_000  # here: once, plus each figure's own data
    assert ours < plotlys / (n - 1)


def test_a_closed_code_widget_is_replaced_for_new_figures():
    old = shared_plotly_code()
    old.close()
    fig = _figure(LiveFigure)
    new = shared_plotly_code()
    assert new is not old and new.comm is not None
    assert fig._plotly_code == new.model_id
    assert isinstance(plotly_code._shared, PlotlyCode)

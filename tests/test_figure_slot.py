"""FigureSlot: a static figure filled later, from any thread, with a small widget state."""

from __future__ import annotations

import json
import threading

import plotly.graph_objects as go

from asfp_explorer.viz.figure_slot import PLOTLY_MIMETYPE, FigureSlot


def _figure() -> go.Figure:
    return go.Figure([go.Scatter(x=list(range(50)), y=[i * i for i in range(50)], name="a"),
                      go.Bar(x=["p", "q"], y=[3, 4], name="b")],
                     layout={"title": {"text": "t"}})


def _state_bytes(widget) -> int:
    return len(json.dumps(widget.get_state(), default=str))


def test_draw_shows_the_figure_as_plotly_json_from_another_thread():
    slot = FigureSlot("waiting", display_now=False)
    assert slot.figure() is None and slot.line.value == "waiting"
    fig = _figure()
    worker = threading.Thread(target=slot.draw, args=(fig,))  # as a queued task does
    worker.start()
    worker.join()
    (out,) = slot.output.outputs
    assert out["output_type"] == "display_data"
    shown = out["data"][PLOTLY_MIMETYPE]
    assert [t["type"] for t in shown["data"]] == ["scatter", "bar"]
    assert list(shown["data"][0]["y"]) == [i * i for i in range(50)]
    assert shown["layout"]["title"]["text"] == "t"
    assert slot.figure().data[1].name == "b"
    slot.draw(go.Figure([go.Scatter(y=[1])]))  # replaces, never appends
    assert len(slot.output.outputs) == 1 and len(slot.figure().data) == 1


def test_its_state_is_the_figure_not_plotlys_bundle():
    fig = _figure()
    slot = FigureSlot(display_now=False)
    slot.draw(fig)
    as_widget = go.FigureWidget(fig)  # carries plotly's JavaScript bundle in its state
    assert _state_bytes(as_widget) > 1_000_000
    assert _state_bytes(slot.output) < 20_000


def test_the_status_line_is_plain_text():
    slot = FigureSlot(display_now=False)
    slot.say("runs: <b>finished</b>")
    assert slot.line.value == "runs: &lt;b&gt;finished&lt;/b&gt;"

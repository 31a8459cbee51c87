"""Views of a run: pure figures, the live dashboard, comparisons and static reports.

    from asfp_explorer.viz import Dashboard, compare, report_html
    dash = Dashboard(config, run_dir="runs/asfp"); dash.show()   # live, trains in the background
    compare(["runs/asfp", "runs/sfp"])                          # overlaid figures of finished runs
    report_html("runs/asfp", "asfp.html")                       # a page that needs no server
    slot = FigureSlot(); dash.then(lambda: slot.draw(compare([...])))  # a figure drawn later

Note: `asfp_explorer.viz.compare` is the function; the module of the same name is
`sys.modules["asfp_explorer.viz.compare"]` (import from it with `from ... import`).
"""

from __future__ import annotations

from .compare import compare, compare_html, report_html
from .figures import Plan, View, dashboard_figure, schedule_figure

__all__ = ["Dashboard", "FigureSlot", "Plan", "View", "compare", "compare_html", "dashboard_figure",
           "report_html", "schedule_figure"]


def __getattr__(name: str):
    # The dashboard pulls in ipywidgets; import it only when it is asked for.
    if name == "Dashboard":
        from .dashboard import Dashboard

        return Dashboard
    if name == "FigureSlot":
        from .figure_slot import FigureSlot

        return FigureSlot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""A stored run in the live dashboard's layout: controls shown, disabled; figures drawn once.

`Dashboard.replay(run)` is the public way in; this module fills a dashboard from `RunData`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RunConfig
from ..store import RunData, load_run
from .speedup import read_export_summary, speedup_html

if TYPE_CHECKING:
    from .dashboard import Dashboard


def replay_dashboard(cls: type["Dashboard"], run: RunData | str | Path, **kwargs: Any
                     ) -> "Dashboard":
    """A `cls` dashboard that shows a stored (finished, stopped or growing) run."""
    data = run if isinstance(run, RunData) else load_run(run)
    kwargs.setdefault("fvcore", False)  # a stored run is not counted again
    dash = cls(RunConfig.from_dict(data.config), refresh_hz=0,
               title=f"replay: {data.path or data.name}", **kwargs)
    dash.is_replay = True
    with dash.lock:
        dash.run = data
        dash.controls.disable_all()
        dash.set_layers(data.layer_names)
        dash.progress.max = max(int(data.config["training"]["epochs"]), 1)
        if data.path is not None:
            dash.run_dir = Path(data.path)
            summary = read_export_summary(data.path)
            if summary is not None:
                dash.speedup.value = speedup_html(summary)
            dash.controls.export.disabled = not dash.can_export()
        dash.controls.save.disabled = False
    dash.redraw()
    dash.update_status()
    return dash

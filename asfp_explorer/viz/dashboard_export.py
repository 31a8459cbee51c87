"""The dashboard's outputs: the compact model with its timing table, and figure files.

Both run off the notebook's thread where they take long (the export builds, checks and times
models for tens of seconds), and report in the dashboard's message line, never a traceback.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .controls import one_line
from .speedup import speedup_html

if TYPE_CHECKING:
    from .dashboard import Dashboard


class CompactExport:
    """Build the compact model of a dashboard's ended run, check it, time it, show the table."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        self.thread: threading.Thread | None = None

    def start(self, benchmark: bool, batch_sizes: tuple[int, ...]) -> threading.Thread | None:
        dash = self.dash
        if self.thread is not None and self.thread.is_alive():
            return self.thread
        if dash.steering.live():
            dash.controls.say("the compact model is built once the run has ended", "warn")
            return None
        if not dash.can_export():
            dash.controls.say("nothing to export: start a run first", "warn")
            return None
        dash.controls.export.disabled = True
        dash.controls.say("building the compact model" + (" and timing it (about 10 s per "
                          "batch size)" if benchmark else "") + " ...")
        self.thread = threading.Thread(target=self._run, args=(benchmark, batch_sizes),
                                       name="asfp-export", daemon=True)
        self.thread.start()
        return self.thread

    def _run(self, benchmark: bool, batch_sizes: tuple[int, ...]) -> None:
        from ..export import export_compact

        dash = self.dash
        try:
            trained = dash.trained_model()
            out = (dash.run_dir / "export") if dash.run_dir else Path(
                tempfile.mkdtemp(prefix="asfp-export-"))
            out.mkdir(parents=True, exist_ok=True)
            summary = export_compact(trained.model, trained.masks, trained.input_size, out,
                                     run_benchmark=benchmark, device=trained.device,
                                     batch_sizes=batch_sizes)
            dash.speedup.value = speedup_html(summary)
            dash.controls.say(f"compact model saved in {out}", "ok")
        except Exception as e:  # one line in the UI; the run and its files are untouched
            dash.controls.say(f"export failed: {one_line(e)}", "error")
        finally:
            dash.controls.export.disabled = False


def default_figure_path(dash: "Dashboard", fmt: str) -> Path:
    """Where the Save button writes: `run_dir/figures/dashboard-epoch-N.<fmt>`, or a
    temporary folder for a run in memory."""
    epoch = dash.run.metrics[-1]["epoch"] if dash.run.metrics else 0
    folder = (dash.run_dir / "figures") if dash.run_dir else Path(
        tempfile.mkdtemp(prefix="asfp-figures-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"dashboard-epoch-{epoch}.{fmt}"

"""The dashboard's controller: what a click or a slider does to the run in progress.

Widgets call in here on the kernel's main thread (or a comm subshell's thread); the run is a
`RunHandle` training on its own thread. Rules:
- a schedule control during a run queues a validated change with `RunHandle.queue_change`,
  which returns the first epoch that trains with it; the message names exactly that epoch;
- Pause, Resume and Stop act only on a live run. A click that reaches the kernel after the
  run has ended (clicks wait while a cell blocks the kernel) is ignored with a status line,
  and the buttons are reset to the ended state; it is never applied to another state;
- before and after a run, a control redraws the schedule preview and the MAC prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from .controls import STEERING, one_line

if TYPE_CHECKING:
    from .dashboard import Dashboard

LIVE = ("running", "paused")


class Steering:
    """Turns control events into `RunHandle` calls for one dashboard."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        self._reverting = False

    # ------------------------------------------------------------ state

    def live(self) -> bool:
        h = self.dash.handle
        return h is not None and h.status in LIVE

    def _ignored(self, what: str) -> None:
        """A click for a run that has ended: say so, show the ended state, change nothing."""
        h = self.dash.handle
        state = h.status if h is not None else "not started"
        self.dash.controls.set_running(False)
        self.dash.controls.export.disabled = not self.dash.can_export()
        self.dash.controls.say(f"{what} ignored: no run is going (the last one is {state})"
                               if h is not None else f"{what} ignored: no run has started",
                               "info")

    # ------------------------------------------------------------ buttons

    def pause(self) -> None:
        if not self.live():
            return self._ignored("Pause")
        self.dash.handle.pause()
        self.dash.controls.set_running(True, paused=True)
        self.dash.controls.say("pausing at the end of the epoch in progress ...", "warn")
        self.dash.poke()

    def resume(self) -> None:
        if not self.live():
            return self._ignored("Resume")
        self.dash.handle.resume()
        self.dash.controls.set_running(True, paused=False)
        self.dash.controls.say("resumed", "info")
        self.dash.poke()

    def stop(self) -> None:
        if not self.live():
            return self._ignored("Stop")
        self.dash.handle.stop()
        self.dash.handle.resume()  # a paused run must wake up to stop
        self.dash.controls.pause.disabled = True
        self.dash.controls.say("stopping at the end of the epoch in progress ...", "warn")

    def toggle_pause(self) -> None:
        h = self.dash.handle
        if h is not None and h.status == "paused":
            self.resume()
        else:
            self.pause()

    # ------------------------------------------------------------ sliders and menus

    def on_control(self, name: str, value: Any) -> None:
        dash = self.dash
        if self._reverting or dash.is_replay:
            return
        try:
            if self.live() and name in STEERING:
                self._queue(name, value)
            elif not self.live():
                dash.preview()
            # (model and data set are disabled during a run: nothing to do)
        except Exception as e:  # never a traceback in the notebook
            dash.controls.say(one_line(e), "error")

    def _queue(self, name: str, value: Any) -> None:
        dash = self.dash
        section, field = STEERING[name]
        if name in ("prune_ratio", "d"):
            value = round(float(value), 4)
        if getattr(getattr(dash.handle.config, section), field) == value:
            return  # a widget echoing the value it already has (a view rendering): no change
        try:
            first = dash.handle.queue_change(**{section: {field: value}})
        except (ConfigError, ValueError) as e:
            dash.controls.say(one_line(e), "error")
            self._revert(name)
            return
        dash.controls.say(f"queued {section}.{field} = {value}: applies from epoch {first}",
                          "info")
        dash.redraw()

    def _revert(self, name: str) -> None:
        section, field = STEERING[name]
        current = getattr(getattr(self.dash.handle.config, section), field)
        self._reverting = True
        try:
            self.dash.controls.set_value(name, current)
        finally:
            self._reverting = False

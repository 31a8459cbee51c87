"""A dashboard that follows a run directory written by another process (a torchrun job, a
command-line run on a server, a synced folder): `Dashboard.follow(run_dir)` is the way in.

The dashboard is a replay (controls shown, disabled) whose figures grow: a thread polls the
folder with `store.follow.RunFollower` and redraws after every poll that brought something
new. It survives the writer being killed, resuming or restarting the run, and says how the
run ended; `close()` stops it. The writer never waits on it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.follow import FollowItem, RunFollower
from .pacing import next_wait

if TYPE_CHECKING:
    from .dashboard import Dashboard

POLL_SECONDS = 1.0


def follow_dashboard(cls: type["Dashboard"], run_dir: str | Path, *,
                     poll_seconds: float = POLL_SECONDS, start_timeout: float | None = 60.0,
                     **kwargs: Any) -> "Dashboard":
    """A `cls` dashboard following `run_dir`; waits up to `start_timeout` seconds (None:
    as long as it takes) for the run's head (config.json) to appear, else TimeoutError."""
    from .replay import replay_dashboard

    follower = RunFollower(run_dir)
    first = follower.poll()
    t0 = time.monotonic()
    while not follower.started:
        if start_timeout is not None and time.monotonic() - t0 > start_timeout:
            raise TimeoutError(f"run_dir: no run started in {str(run_dir)!r} within "
                               f"{start_timeout:g} s (no config.json)")
        threading.Event().wait(min(poll_seconds, 0.5))  # a poll interval: nothing to wait on
        first = follower.poll()
    dash = replay_dashboard(cls, follower.run, **kwargs)
    dash.follower = follower
    dash.follow_updates = threading.Condition()  # notified after each redraw (tests, users)
    dash.follow_items: list[FollowItem] = []
    _show_items(dash, first)
    thread = threading.Thread(target=_follow_loop, args=(dash, follower, poll_seconds),
                              name="asfp-follow", daemon=True)
    dash.follow_thread = thread
    thread.start()
    return dash


def _follow_loop(dash: "Dashboard", follower: RunFollower, poll_seconds: float) -> None:
    # As the live refresher (`pacing`): redraws take at most `dash.busy_share` of the wall
    # time, so a follower beside training on a small machine leaves it its cores.
    wait = poll_seconds
    while not dash._closing:
        t0 = time.perf_counter()
        try:
            with dash.lock:
                items = follower.poll()
                if items:
                    _show_items(dash, items)
        except Exception as e:  # keep following; say what broke
            from .dashboard import one_line

            dash.controls.say(f"following failed once: {one_line(e)}", "error")
        wait = next_wait(time.perf_counter() - t0, poll_seconds, dash.busy_share)
        # close() sets _wake: the wait is cut short and the loop ends.
        dash._wake.wait(timeout=wait)
        dash._wake.clear()


def _show_items(dash: "Dashboard", items: list[FollowItem]) -> None:
    """Fold what the follower read into the figures and the message line (under dash.lock)."""
    from .dashboard import STATUS_LEVEL

    follower: RunFollower = dash.follower
    with dash.lock:
        dash.run = follower.run
        for item in items:
            if item.kind in ("started", "restarted"):
                dash.run_ended.clear()
                dash._ended = False
                dash.progress.bar_style = ""
            if item.kind == "started":
                dash.set_layers(dash.run.layer_names)
                dash.controls.say(f"following: {item.message}", "info")
            elif item.kind == "ended":
                dash._ended = True
                level = STATUS_LEVEL.get(item.status or "", "warn")
                dash.controls.say(f"run {item.status}: {item.message}", level)
                dash.progress.bar_style = {"ok": "success", "warn": "warning",
                                           "error": "danger"}.get(level, "info")
                dash.controls.export.disabled = not dash.can_export()
                dash.run_ended.set()
            elif item.kind in ("interrupted", "resumed", "rewound", "restarted", "changed"):
                if item.kind == "resumed":
                    dash._ended = False
                    dash.run_ended.clear()
                dash.controls.say(f"{item.kind}: {item.message}",
                                  "warn" if item.kind == "interrupted" else "info")
        if dash.run.config:
            dash.progress.max = max(int(dash.run.config["training"]["epochs"]), 1)
            dash.redraw()
            dash.diagnostics.update()
            dash.update_status()
        dash.follow_items.extend(items)
    with dash.follow_updates:
        dash.follow_updates.notify_all()

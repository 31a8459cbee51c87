"""Fixtures and helpers for the viz tests: real tiny runs, a counting comm, event capture.

The viz test modules load this as a plugin (`pytest_plugins = ["conftest_viz"]`), so the
session fixture is built once for all of them, and import helpers from it; pytest puts
tests/ on the path. Runs are digits + ResNet-20, 3 epochs, ~1 s each on an idle CPU.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from asfp_explorer.config import RunConfig
from asfp_explorer.engine.events import Event


def viz_config(**sections) -> RunConfig:
    base = RunConfig().with_changes(training={"epochs": 3, "device": "cpu"},
                                    data={"batch_size": 64})
    return base.with_changes(**sections) if sections else base


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: these 8x8 models gain nothing from more, and on a busy 2-core
    machine two threads spin against other processes (runs took 5x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EventLog:
    """Observer that keeps every event (to replay a real run into a dashboard)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.__name__ = "EventLog"

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(scope="session")
def viz_runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories: asfp (seed 0), sfp (seeds 0 and 1), hard-sfp; 3 epochs each.

    The asfp run also keeps its event list (`viz_runs["asfp_events"]`).
    """
    from asfp_explorer.engine import RunHandle

    root = tmp_path_factory.mktemp("viz_runs")
    out: dict = {}
    for name, pruning, seed in [("asfp", {"method": "asfp"}, 0), ("sfp0", {"method": "sfp"}, 0),
                                ("sfp1", {"method": "sfp"}, 1),
                                ("hard", {"method": "hard-sfp"}, 0)]:
        log = EventLog()
        cfg = viz_config(pruning=pruning).with_changes(training={"seed": seed})
        with one_thread():
            RunHandle(cfg, root / name, [log]).run()
        out[name] = root / name
        out[f"{name}_events"] = log.events
    return out


class CountingComm:
    """A stand-in comm that records what a widget sends (as in ipywidgets' own tests)."""

    comm_id = "counting-comm"
    kernel = "Truthy"  # ipywidgets sends only when the comm has a kernel

    def __init__(self) -> None:
        self.messages: list[tuple[dict, list]] = []

    def send(self, data=None, metadata=None, buffers=None, **kwargs) -> None:
        self.messages.append((data, list(buffers or [])))

    def open(self, *args, **kwargs) -> None:
        pass

    def on_msg(self, *args, **kwargs) -> None:
        pass

    def close(self, *args, **kwargs) -> None:
        pass

    def bytes(self, start: int = 0) -> int:
        """Size of the messages from `start` on, as JSON plus binary buffers."""
        return sum(len(json.dumps(d, default=_size_only)) + sum(len(memoryview(b).cast("B"))
                                                                for b in bufs)
                   for d, bufs in self.messages[start:])

    def clear(self) -> None:
        self.messages.clear()


def _size_only(o):
    return str(o)


def attach(widget, comm: CountingComm | None = None) -> CountingComm:
    comm = comm or CountingComm()
    widget.comm = comm
    return comm

"""Training engine: events, the trainer (the loop) and run handles (a background thread,
`RunHandle`, or a child process, `ProcessRunHandle`).

`RunHandle` and `Trainer` load on first use (PEP 562): the run store imports the event
vocabulary (`engine.events`, which imports nothing of the project), and the runner imports
the store, so loading the events must not load the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import EpochSnapshot, Event, EventKind

if TYPE_CHECKING:
    from .process_runner import ProcessRunHandle
    from .runner import RunHandle
    from .trainer import Trainer

__all__ = ["Event", "EpochSnapshot", "EventKind", "ProcessRunHandle", "RunHandle", "Trainer"]


def __getattr__(name: str) -> Any:
    if name == "RunHandle":
        from .runner import RunHandle

        return RunHandle
    if name == "ProcessRunHandle":
        from .process_runner import ProcessRunHandle

        return ProcessRunHandle
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Training engine: events, the trainer (the loop) and a run handle (background thread)."""

from .events import Event, EpochSnapshot, EventKind
from .runner import RunHandle
from .trainer import Trainer

__all__ = ["Event", "EpochSnapshot", "EventKind", "RunHandle", "Trainer"]

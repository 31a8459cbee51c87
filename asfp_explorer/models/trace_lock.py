"""Keeps tracing and training apart inside one process.

`torch.fx.symbolic_trace` patches `torch.nn.Module.__call__` for the whole interpreter while it
runs, so a forward pass on another thread at that moment is recorded into the trace (and fails
there). Two runs started from one notebook would hit this: the second run's Trainer traces its
model (MAC counter, fvcore) while the first trains on a background thread.

`running_models()` is shared: any number of threads may run models at once. `tracing()` is
exclusive: it waits until no thread runs a model, and while it holds, new model runs wait.
Waiting tracers go first, so a stream of training epochs cannot starve them. Both are
re-entrant on one thread; a thread that runs models must not start tracing (that would wait
on itself), which `tracing()` refuses with an error instead of hanging.

The trainer holds `running_models()` around each pass over the data (one acquire per pass,
never per batch, and no host synchronisation), not while observers run.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_cond = threading.Condition()
_runners = 0  # threads inside running_models(), counted once per thread
_tracer: int | None = None  # ident of the thread inside tracing()
_tracer_depth = 0
_tracers_waiting = 0
_local = threading.local()  # .depth: this thread's running_models() nesting


@contextmanager
def running_models() -> Iterator[None]:
    """Shared hold for forward/backward passes; waits while a trace is in progress."""
    global _runners
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        me = threading.get_ident()
        with _cond:
            while _tracer != me and (_tracer is not None or _tracers_waiting):
                _cond.wait()
            _runners += 1
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0:
            with _cond:
                _runners -= 1
                _cond.notify_all()


@contextmanager
def tracing() -> Iterator[None]:
    """Exclusive hold for torch.fx / torch.jit tracing; waits until no model is running."""
    global _tracer, _tracer_depth, _tracers_waiting
    me = threading.get_ident()
    if getattr(_local, "depth", 0):
        raise RuntimeError("tracing a model from inside a training pass would deadlock; "
                           "trace before the run starts or in an observer")
    with _cond:
        if _tracer != me:
            _tracers_waiting += 1
            try:
                while _tracer is not None or _runners:
                    _cond.wait()
            finally:
                _tracers_waiting -= 1
            _tracer = me
        _tracer_depth += 1
    try:
        yield
    finally:
        with _cond:
            _tracer_depth -= 1
            if _tracer_depth == 0:
                _tracer = None
                _cond.notify_all()

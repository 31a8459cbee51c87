"""Runs one after another, off the caller's thread: a notebook cell queues, it never waits.

    queue = RunQueue()
    queue.add(lambda: RunHandle(config_a, "runs/a").run())
    queue.add(lambda: RunHandle(config_b, "runs/b").run())   # starts when the first has ended
    ...
    queue.wait()                                              # only where blocking is wanted

Why: ipywidgets delivers a button click to the kernel as a message that waits while a cell
runs, so a cell that blocks on `.wait()` makes every dashboard deaf until it returns. With a
queue the cell returns at once and the controls stay live. `Dashboard.then()` builds on it.

Each job is a callable that blocks until its run has ended and returns anything (a status).
A job that raises is recorded in `errors` (one line each) and the queue goes on with the next.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable


class RunQueue:
    """A FIFO of jobs run one at a time on one daemon thread, started with the first job."""

    def __init__(self, name: str = "asfp-queue"):
        self.name = name
        self.results: list[Any] = []  # each finished job's return value, in order
        self.errors: list[str] = []  # "job: ExceptionType: first line" per failed job
        self._jobs: collections.deque[tuple[str, Callable[[], Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self.members: set[int] = set()  # ids of objects with a job here (Dashboard.then)

    def add(self, job: Callable[[], Any], label: str = "") -> "RunQueue":
        """Append `job`; it runs once every job before it has returned."""
        with self._cond:
            self._jobs.append((label or getattr(job, "__name__", "job"), job))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return self

    @property
    def pending(self) -> int:
        """Jobs not yet finished, the running one included."""
        with self._cond:
            return len(self._jobs) + int(self._busy)

    def cancel(self) -> int:
        """Drop the jobs that have not started; returns how many. The running one goes on."""
        with self._cond:
            n = len(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return n

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job has run (True) or `timeout` seconds passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._jobs:
                    self._thread = None  # a later add() starts a fresh thread
                    self._cond.notify_all()
                    return
                label, job = self._jobs.popleft()
                self._busy = True
            try:
                result = job()
                self.results.append(result)
            except BaseException as e:  # one job's failure must not strand the ones after it
                text = str(e).strip().splitlines()
                self.errors.append(f"{label}: {type(e).__name__}: {text[0] if text else ''}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

"""The recorder: the observer that writes a run directory while the run trains.

It is part of the record, not a watcher (`essential = True`): when it cannot write, the
trainer ends the run as failed at that epoch instead of detaching it, so a run never goes on
with checkpoints that outrun its record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..engine.events import EpochSnapshot, Event, EventKind
from . import files
from .environment import environment_info
from .record import RunData, layer_file, summarise


class RunRecorder:
    """Observer that writes a run directory and keeps the same `RunData` in memory.

    For a resumed run, pass `resume_from=(record, kept_metrics_lines)` from
    `record.load_for_resume`: the recorder then cuts the record back to the checkpoint
    (dropping only what lies after it) before appending.
    """

    essential = True  # the trainer re-raises its errors: see engine/trainer.py `_emit`

    def __init__(self, run_dir: str | os.PathLike, environment: Mapping[str, Any] | None = None,
                 *, resume_from: tuple[RunData, list[str]] | None = None):
        self.path = Path(run_dir)
        self.run = RunData(path=self.path)
        self.environment = dict(environment or {})
        self._resume_from = resume_from
        self.__name__ = "RunRecorder"

    def __call__(self, event: Event) -> None:
        p = self.path
        if event.kind is EventKind.RUN_START:
            if event.data.get("resumed"):
                self._start_resumed(event)
            else:
                self._start_new(event)
            return
        if not self.run.config:
            return  # stopped before the run started: nothing of it to record
        self.run.apply(event)
        if event.kind is EventKind.EPOCH_END:
            snap: EpochSnapshot = event.data
            try:
                files.atomic_savez(layer_file(p, snap.epoch),
                                   sizes=np.array([len(n) for n in snap.norms]),
                                   norms=np.concatenate(snap.norms).astype(np.float32),
                                   masks=np.concatenate(snap.masks))
                files.append_line(p / "metrics.jsonl", self.run.metrics[-1])
                files.atomic_write_json(p / "summary.json", self.run.summary)
            except BaseException:
                # Not recorded, so not part of the run: the end summary must not count it
                # (what did land on disk lies after the checkpoint; a resume drops it).
                self.run.truncate(snap.epoch - 1)
                self.run.summary = {**self.run.summary, **summarise(self.run)}
                raise
        elif event.kind in (EventKind.PARAMETERS_CHANGED, EventKind.RUN_END):
            files.append_line(p / "events.jsonl", self.run.events[-1])
            files.atomic_write_json(p / "summary.json", self.run.summary)

    def _start_new(self, event: Event) -> None:
        p = self.path
        self.run.apply(event)
        (p / "layers").mkdir(parents=True, exist_ok=True)
        # config.json last: its presence marks a run directory whose head is complete.
        files.atomic_write_json(p / "environment.json",
                                {**environment_info(), "device": event.data["device"],
                                 "seed": self.run.config["training"]["seed"],
                                 **self.environment})
        files.atomic_write_json(p / "run_start.json", self.run.info)
        files.atomic_write_json(p / "config.json", self.run.config)

    def _start_resumed(self, event: Event) -> None:
        import torch

        if self._resume_from is None:
            raise RuntimeError("RunRecorder: a resumed run needs resume_from=load_for_resume(...)")
        p = self.path
        self.run, kept_lines = self._resume_from
        self.run.apply(event)
        resumed = self.run.events[-1]
        before = _last_thread_count(self.run)
        now = torch.get_num_threads()
        resumed["cpu_threads"] = now
        if before is not None and before != now:  # RunHandle warned before training
            resumed["cpu_threads_before"] = before
        # Only what lies after the checkpoint is dropped: metrics lines and layer files of
        # epochs it does not cover (the epoch a crash interrupted), and a torn last line.
        text = "".join(kept_lines).encode()
        if (p / "metrics.jsonl").read_bytes() != text:
            files.atomic_write_bytes(p / "metrics.jsonl", text)
        last = self.run.metrics[-1]["epoch"] if self.run.metrics else -1
        for f in (p / "layers").glob("*.npz*"):  # the files and their checksums
            epoch = f.name.split(".")[0]
            if epoch.isdigit() and int(epoch) > last:
                f.unlink()
        files.append_line(p / "events.jsonl", resumed)
        files.atomic_write_json(p / "summary.json", self.run.summary)


def _last_thread_count(run: RunData) -> int | None:
    for e in reversed(run.events):
        if e.get("event") == "resumed" and "cpu_threads" in e:
            return e["cpu_threads"]
    return run.environment.get("cpu_threads")

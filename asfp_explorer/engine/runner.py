"""A run handle: one training run, in the foreground or a background thread.

Pause, resume and stop act at epoch boundaries; `update()` queues schedule changes that take
effect at the next boundary and are recorded as PARAMETERS_CHANGED events, so a run steered
by hand can be reproduced.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch import nn

from ..config import ConfigError, RunConfig
from ..data import Dataset
from .events import Observer
from .trainer import Control, Trainer, validate_changes


class RunHandle(Control):
    """Build with a config (and optionally a run directory), then `run()` or `start()`.

    `resume=True` continues the run in `run_dir` from its last complete epoch;
    `overwrite=True` replaces an existing run directory. Without either, an existing run
    directory is refused so that nothing saved is lost.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        run_dir: str | Path | None = None,
        observers: Iterable[Observer] = (),
        *,
        resume: bool = False,
        overwrite: bool = False,
        model: nn.Module | None = None,
        dataset: Dataset | None = None,
    ):
        from ..store import RunDirError, RunLock, RunRecorder, load_checkpoint

        self._lock = threading.Lock()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Condition(self._lock)
        self._queued: list[dict[str, Mapping[str, Any]]] = []
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.recorder = None
        self._file_lock = None
        state = None
        if self.run_dir is not None:
            exists = self.run_dir.exists() and any(self.run_dir.iterdir())
            if resume:
                state = load_checkpoint(self.run_dir)
                saved = RunConfig.from_dict(state["config"])
                if config is not None and config.model != saved.model:
                    raise ConfigError(f"model.name: {config.model.name!r} differs from the "
                                      f"checkpoint's {saved.model.name!r}")
                config = saved
            elif exists and not overwrite:
                raise RunDirError(f"out: {str(self.run_dir)!r} already holds a run; choose "
                                  "another folder, or resume or overwrite it explicitly")
            self._file_lock = RunLock(self.run_dir)
            self._file_lock.acquire()
            if exists and overwrite and not resume:
                for child in self.run_dir.iterdir():
                    if child.name != "lock":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            self.recorder = RunRecorder(self.run_dir)
        if config is None:
            raise ConfigError("config: a RunConfig is needed unless resuming a run directory")
        try:
            observers = ([self.recorder] if self.recorder else []) + list(observers)
            self.trainer = Trainer(config, observers, model=model, dataset=dataset,
                                   checkpoint_path=self.run_dir / "checkpoint.pt" if self.run_dir else None,
                                   control=self)
            if state is not None:
                self.trainer.load_checkpoint_state(state)
        except BaseException:
            self._release()
            raise

    # -------------------------------------------------------------- running

    def run(self) -> str:
        """Train in this thread; returns the final status."""
        try:
            return self.trainer.run()
        finally:
            self._release()

    def start(self) -> "RunHandle":
        """Train in a background thread (the notebook kernel stays responsive)."""
        if self._thread is not None:
            raise RuntimeError("run: already started; a handle runs once")

        def target() -> None:
            try:
                self.trainer.run()
            except BaseException as e:  # reported through RUN_END and kept for the caller
                self.error = e
            finally:
                self._release()

        self._thread = threading.Thread(target=target, name="asfp-train", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Block until the background run ends (or `timeout` seconds); returns the status."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def _release(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()

    # -------------------------------------------------------------- steering

    @property
    def status(self) -> str:
        s = self.trainer.status
        return "paused" if s == "running" and self._paused.is_set() else s

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    @property
    def config(self) -> RunConfig:
        """The configuration including changes still queued."""
        with self._lock:
            cfg = self.trainer.config
            for ch in self._queued:
                cfg = cfg.with_changes(**ch)
            return cfg

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        with self._wake:
            self._paused.clear()
            self._wake.notify_all()

    def stop(self) -> None:
        """Stop at the next epoch boundary (the run stays resumable)."""
        with self._wake:
            self._stop.set()
            self._wake.notify_all()

    def update(self, **sections: Mapping[str, Any]) -> RunConfig:
        """Queue changes, e.g. `update(pruning={"prune_ratio": 0.5})`; validated now,
        applied at the next epoch boundary. Returns the config they lead to."""
        new = validate_changes(self.config, sections, self.trainer.epoch)
        with self._lock:
            self._queued.append({k: dict(v) for k, v in sections.items()})
        return new

    # Control interface, called by the trainer at each epoch boundary.

    def at_boundary(self, epochs_completed: int) -> bool:
        with self._wake:
            while self._paused.is_set() and not self._stop.is_set():
                self._wake.wait(timeout=0.5)
        return not self._stop.is_set()

    def take_changes(self) -> list[dict[str, Mapping[str, Any]]]:
        with self._lock:
            out, self._queued = self._queued, []
        return out
